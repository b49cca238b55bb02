//! Waiting for a key to go: an etcd watch, in slices.
//!
//! A waiter watches for DELETE events from the revision right after the one
//! its failed attempt saw, so a release between the attempt and the watch
//! is not missed (etcd replays history from `start_revision`). The watch
//! lasts one slice at most; the caller then tries again whatever happened.
//! The slice bounds how late a waiter notices that its own lease is gone,
//! that its etcd member lost the cluster (a watch on a cut-off member stays
//! silent), or that history was compacted.

use std::time::{Duration, Instant};

use serde_json::json;

use super::session::Core;
use super::wire::{b64, WatchResponse};
use crate::error::Result;

/// The longest one watch lasts before the waiter looks again.
pub(crate) const SLICE: Duration = Duration::from_secs(1);
/// A watch that ends early without news is not reopened sooner than this,
/// so a failing endpoint is not hammered.
const PAUSE: Duration = Duration::from_millis(50);

/// Returns once a key in `[key, range_end)` (just `key` if `range_end` is
/// empty) is deleted at a revision after `after`, or after one slice, or at
/// `until`, whichever comes first. `op` names the wait in errors.
pub(crate) fn await_delete(
    core: &Core,
    key: &[u8],
    range_end: &[u8],
    after: i64,
    until: Option<Instant>,
    op: &str,
) -> Result<()> {
    let started = Instant::now();
    let end = match until {
        Some(until) => until.min(started + SLICE),
        None => started + SLICE,
    };
    let mut create = json!({
        "key": b64(key),
        "start_revision": (after + 1).to_string(),
        "filters": ["NOPUT"],
    });
    if !range_end.is_empty() {
        create["range_end"] = json!(b64(range_end));
    }
    let body = json!({ "create_request": create });
    let news = core
        .client
        .stream::<WatchResponse, ()>("/v3/watch", &body, end, |r| {
            // Compacted past `after`, or cancelled: look again.
            (r.canceled || r.events.iter().any(|e| e.is_delete())).then_some(())
        })
        .map_err(|e| e.into_error(&core.client, op))?;
    if news.is_none() {
        let left = end.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            std::thread::sleep(PAUSE.min(left));
        }
    }
    Ok(())
}
