//! Segment names: the rules, and generated unique names.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The longest accepted name, in bytes (without the optional leading `/`).
pub const MAX_LEN: usize = 200;

/// Checks `name` against the rules and returns it without its leading `/`.
///
/// Rules: 1 to [`MAX_LEN`] bytes of `[A-Za-z0-9._-]`, not `.` or `..`; one
/// leading `/` is accepted and stripped.
pub fn validate(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let reason = if bare.is_empty() {
        Some("it is empty")
    } else if bare.len() > MAX_LEN {
        Some("it is longer than 200 bytes")
    } else if bare == "." || bare == ".." {
        Some("'.' and '..' are reserved")
    } else if let Some(c) = bare.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(match c {
            '/' => "it contains '/' after the first character",
            '\0' => "it contains a NUL byte",
            c if c.is_whitespace() => "it contains white space",
            c if !c.is_ascii() => "it contains a non-ASCII character",
            _ => "it contains a character outside [A-Za-z0-9._-]",
        })
    } else {
        None
    };
    match reason {
        None => Ok(bare),
        Some(reason) => Err(Error::InvalidName { name: name.to_string(), reason }),
    }
}

/// A name no other live segment uses, for `K::new()`: the prefix, this pid,
/// the time and a counter. Creation uses `O_EXCL`, so a collision with a
/// stale segment is detected and the caller retries with the next name.
pub fn generate() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("shmsync.{}.{nanos:08x}.{n}", std::process::id())
}

/// The prefix of the names segments are built under before they are renamed
/// into place (see `create`). A file with this prefix whose creator is dead
/// is debris from a creator killed mid-create; `gc` removes it.
pub const TEMP_PREFIX: &str = ".shmsync-init.";

/// A fresh name to build a segment under: the prefix, this pid and a counter.
pub fn temp() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{}.{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names_and_strips_one_slash() {
        assert_eq!(validate("jobs").unwrap(), "jobs");
        assert_eq!(validate("/jobs").unwrap(), "jobs");
        assert_eq!(validate("a.b-c_D9").unwrap(), "a.b-c_D9");
        assert_eq!(validate(&"x".repeat(200)).unwrap().len(), 200);
        assert!(validate(&generate()).is_ok());
        assert!(validate(&temp()).is_ok());
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let long = "x".repeat(201);
        for bad in ["", "/", ".", "..", "/..", "a/b", "//a", "a b", "a\0b", "é", "a*", long.as_str()] {
            match validate(bad) {
                Err(Error::InvalidName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn generated_names_differ() {
        assert_ne!(generate(), generate());
    }
}
