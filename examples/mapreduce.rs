//! Parallel evaluation of a list comprehension: Python's `[f(x) for x in
//! data]` done by a pool, as a word count over this crate's own source and
//! docs (every `*.rs` under `src/` and `examples/`, plus `README.md` and
//! `CHANGELOG.md`). Map: a worker reads one file and counts its words,
//! printing its name and the file. Reduce: the parent sums the counts per
//! word. It prints the top 20 words, then counts again in this one process
//! and checks that both counts are identical.
//!
//! A word is a run of ASCII letters and digits, lowercased; it is kept if it
//! is all letters, at least three long, and not a stop word. Ties in the top
//! 20 are broken by the word, so the list is deterministic.
//!
//! Run: `cargo run --release --example mapreduce`
//!
//! Expected output: one `reading` line per file, in roughly the order of the
//! files, from any worker; the words, counts and totals follow the crate's
//! text as it is when you run it.
//! ```text
//! PoolWorker-1 reading CHANGELOG.md
//! PoolWorker-2 reading README.md
//! PoolWorker-1 reading examples/condition.rs
//! ...
//! PoolWorker-2 reading src/sys/time.rs
//!
//! TOP 20 WORDS BY FREQUENCY
//!
//! self     :  1044
//! let      :   578
//! name     :   539
//! ...
//! worker   :   184
//!
//! 68 files, 1954 distinct words: the pool's count and the single-process count match
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use shmsync::{current, Pool};

/// The longest any wait in this example may take.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

const WORKERS: usize = 4;

/// Words too common to tell anything (Python's example's list, less the
/// ones shorter than three letters, which are dropped anyway).
const STOP_WORDS: [&str; 6] = ["and", "are", "for", "that", "the", "with"];

/// The crate's root, where `Cargo.toml` is.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.rs` under `dir` (relative to the root), recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root().join(dir))? {
        let entry = entry?;
        let path = dir.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The input files, relative to the root, sorted.
fn input_files() -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files)?;
    rust_files(Path::new("examples"), &mut files)?;
    files.extend(["README.md", "CHANGELOG.md"].map(PathBuf::from).into_iter().filter(|p| root().join(p).is_file()));
    let mut files: Vec<String> = files.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    files.sort();
    Ok(files)
}

/// The words of `text` and how often each occurs.
fn count_words(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        let word = word.to_ascii_lowercase();
        if word.len() >= 3 && word.bytes().all(|b| b.is_ascii_alphabetic()) && !STOP_WORDS.contains(&word.as_str()) {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

/// Reads and counts one file; an unreadable file is an error.
fn file_counts(file: &str) -> Result<BTreeMap<String, u64>, String> {
    let text = std::fs::read_to_string(root().join(file)).map_err(|e| format!("{file}: {e}"))?;
    Ok(count_words(&text))
}

/// The map step, run in a worker.
fn file_to_words(file: String) -> Result<BTreeMap<String, u64>, String> {
    println!("{} reading {file}", current().name());
    file_counts(&file)
}

/// The reduce step: the sum of the counts, per word.
fn reduce(partials: impl IntoIterator<Item = BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for partial in partials {
        for (word, n) in partial {
            *total.entry(word).or_insert(0) += n;
        }
    }
    total
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let files = input_files()?;

    let pool = Pool::builder().processes(WORKERS).build()?;
    let mapped = pool.map(file_to_words, files.iter().cloned());
    pool.close();
    if !pool.join_timeout(DEADLINE)? {
        return Err("pool workers did not exit in time".into());
    }
    let word_counts = reduce(mapped?.into_iter().collect::<Result<Vec<_>, String>>()?);

    // Most frequent first; equal counts in word order.
    let mut ranked: Vec<(&str, u64)> = word_counts.iter().map(|(w, &n)| (w.as_str(), n)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top20 = &ranked[..ranked.len().min(20)];
    println!("\nTOP 20 WORDS BY FREQUENCY\n");
    let longest = top20.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
    for (word, count) in top20 {
        println!("{word:<width$}: {count:5}", width = longest + 1);
    }

    let single = reduce(files.iter().map(|f| file_counts(f)).collect::<Result<Vec<_>, String>>()?);
    if single != word_counts {
        return Err("the pool's count and the single-process count differ".into());
    }
    println!(
        "\n{} files, {} distinct words: the pool's count and the single-process count match",
        files.len(),
        word_counts.len()
    );
    Ok(())
}
