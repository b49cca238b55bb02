//! What travels between the pool and its workers, and the trampoline that
//! runs a task function in a worker.
//!
//! The pool sends one [`Task`] frame per chunk; the worker answers with one
//! or more [`Done`] frames covering the chunk's items in order, each within
//! the frame limit, so an oversize result fails alone ([`Outcome::TooLarge`])
//! and never the connection.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::super::codec;

/// Runs a task function, given its address and one encoded item.
pub type Call = fn(usize, &[u8]) -> Result<ByteBuf, String>;

/// A chunk of items for one worker.
#[derive(Deserialize)]
pub struct Task {
    /// Input index of the first item.
    pub first: u64,
    /// Address of the trampoline (`call::<T, R>`).
    pub call: u64,
    /// Address of the user's `fn(T) -> R`.
    pub func: u64,
    /// Encoded items.
    pub items: Vec<ByteBuf>,
}

/// A [`Task`] as the pool sends it, borrowing its items (same encoding).
#[derive(Serialize)]
pub struct TaskRef<'a> {
    /// Input index of the first item.
    pub first: u64,
    /// Address of the trampoline.
    pub call: u64,
    /// Address of the user's function.
    pub func: u64,
    /// Encoded items.
    pub items: &'a [ByteBuf],
}

/// Encoded bytes a task frame adds to its items: four varints and, per
/// item, a length varint. An upper bound.
pub const TASK_OVERHEAD: usize = 4 * 10;
/// Per item (or result) in a frame, beyond its bytes: an upper bound.
pub const PER_ITEM: usize = 10 + 1;

/// One item's outcome.
#[derive(Serialize, Deserialize, Debug)]
pub enum Outcome {
    /// The encoded result.
    Ok(ByteBuf),
    /// The task panicked (or its item did not decode): the message.
    Failed(String),
    /// The encoded result, this many bytes, does not fit in a frame.
    TooLarge(u64),
}

/// Outcomes for consecutive items of a chunk, starting at `first`.
#[derive(Serialize, Deserialize)]
pub struct Done {
    /// Input index of the first item covered.
    pub first: u64,
    /// One outcome per item.
    pub outcomes: Vec<Outcome>,
}

/// Decodes an item, runs `fn(T) -> R` at `func`, and encodes the result.
pub fn call<T: DeserializeOwned, R: Serialize>(func: usize, item: &[u8]) -> Result<ByteBuf, String> {
    // SAFETY: `func` is the address of a `fn(T) -> R` with these very T and R,
    // taken by `Pool` in the process that forked this worker. fork copies the
    // executable's mapping at the same addresses, so the address names the
    // same function here. Task messages come only from that parent, over a
    // private socket pair.
    let f = unsafe { std::mem::transmute::<usize, fn(T) -> R>(func) };
    let item: T = codec::decode(item).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    codec::encode_into(&f(item), &mut out).map_err(|e| e.to_string())?;
    Ok(ByteBuf::from(out))
}

/// The trampoline for `fn(T) -> R` and the function's address, as sent.
pub fn addresses<T: DeserializeOwned, R: Serialize>(f: fn(T) -> R) -> (u64, u64) {
    let call: Call = call::<T, R>;
    (call as usize as u64, f as usize as u64)
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the task panicked".to_string())
}

/// A function [`Pool::starmap`](super::Pool::starmap) can run: a function
/// item (or a closure that captures nothing) of one to four arguments,
/// called with the fields of a tuple item.
///
/// Such a function's type is zero-sized, so the worker's trampoline,
/// compiled for that very type, needs no address to call it. A function
/// *pointer* (`f as fn(A, B) -> R`) or a capturing closure is refused at
/// compile time: name the function instead.
pub trait StarFn<Args, R>: Copy + Send + Sync + 'static {
    /// Refuses, when instantiated, a type that is not zero-sized.
    const ZERO_SIZED: () = assert!(
        std::mem::size_of::<Self>() == 0,
        "starmap takes a function item or a closure that captures nothing, not a function pointer"
    );

    /// Calls the function with the tuple's fields.
    fn call_with(&self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($arg:ident),+) => {
        impl<F, R, $($arg),+> StarFn<($($arg,)+), R> for F
        where
            F: Fn($($arg),+) -> R + Copy + Send + Sync + 'static,
        {
            #[allow(non_snake_case)]
            fn call_with(&self, ($($arg,)+): ($($arg,)+)) -> R {
                self($($arg),+)
            }
        }
    };
}
star_fn!(A);
star_fn!(A, B);
star_fn!(A, B, C);
star_fn!(A, B, C, D);

/// Decodes a tuple item, calls `F` with its fields, and encodes the result.
pub fn star_call<F, Args, R>(_: usize, item: &[u8]) -> Result<ByteBuf, String>
where
    F: StarFn<Args, R>,
    Args: DeserializeOwned,
    R: Serialize,
{
    #[allow(clippy::let_unit_value)]
    let () = F::ZERO_SIZED;
    // SAFETY: `F` is zero-sized (checked when this is compiled) and `Copy`,
    // and the pool held a value of it when it forked this worker: reading a
    // zero-sized value from a dangling, aligned pointer reads no memory and
    // makes a copy of that value.
    let f: F = unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() };
    let args: Args = codec::decode(item).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    codec::encode_into(&f.call_with(args), &mut out).map_err(|e| e.to_string())?;
    Ok(ByteBuf::from(out))
}

/// The trampoline for a [`StarFn`], as sent (it needs no function address).
pub fn star_addresses<F, Args, R>(_: F) -> (u64, u64)
where
    F: StarFn<Args, R>,
    Args: DeserializeOwned,
    R: Serialize,
{
    #[allow(clippy::let_unit_value)]
    let () = F::ZERO_SIZED;
    let call: Call = star_call::<F, Args, R>;
    (call as usize as u64, 0)
}
