//! Passing data between processes, built on the named primitives and the
//! launcher: pipes, queues, a pool of workers, and shared dicts.
//!
//! Payloads are serde values encoded with postcard (compact, no
//! `deserialize_any`: use typed structs, tuples and enums). Every bound has a
//! typed error, and no message is ever half delivered.

mod codec;
mod pipe;
mod queue;
mod ring;

pub use pipe::{pipe, pipe_oneway, Connection, Receiver, Sender, DEFAULT_MAX_FRAME};
pub use queue::{JoinableQueue, Queue};
