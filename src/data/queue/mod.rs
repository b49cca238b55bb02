//! `Queue<T>` and `JoinableQueue<T>`: bounded multi-producer, multi-consumer
//! queues of serde messages in a named segment (Python's
//! `multiprocessing.Queue` and `JoinableQueue`).
//!
//! The code, one job a file: `handle` (the two types, their segment layout
//! and lifecycle, and the raw put and get under every call), `typed` (put
//! and get of `T`: blocking, timed and try), `waiting` (`wait_any` and the
//! futures), and `zero_copy` (`put_with` and `get_with` on byte messages).
//! The ring under them is `data::ring`.

mod handle;
mod typed;
mod waiting;
mod zero_copy;

pub use handle::{JoinableQueue, Queue};
