//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in shmsync. Each message names the object
/// involved and says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name breaks the naming rules: 1 to 200 bytes of `[A-Za-z0-9._-]`,
    /// not `.` or `..`, with an optional leading `/`.
    #[error("invalid segment name {name:?}: {reason}; use 1 to 200 characters from [A-Za-z0-9._-], not '.' or '..'")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// `create` found the name taken.
    #[error("segment '{name}' already exists; open it instead, use open_or_create, or remove it with shmsync::unlink")]
    AlreadyExists {
        /// The segment's name.
        name: String,
    },

    /// `open` found no segment of that name.
    #[error("segment '{name}' does not exist; create it first, or use open_or_create")]
    NotFound {
        /// The segment's name.
        name: String,
    },

    /// The segment holds another kind of object.
    #[error("segment '{name}' holds {found}, but was opened as {expected}; open it with the matching type or choose another name")]
    WrongKind {
        /// The segment's name.
        name: String,
        /// The type the caller asked for, e.g. "Lock".
        expected: &'static str,
        /// The kind the segment holds.
        found: String,
    },

    /// The segment was made by a build of shmsync (or a `T`) with another
    /// memory layout; sharing it would be undefined behaviour.
    #[error("segment '{name}' has an incompatible layout ({detail}); every process must use the same shmsync version, target and types")]
    IncompatibleLayout {
        /// The segment's name.
        name: String,
        /// Which part of the layout differs.
        detail: String,
    },

    /// The segment's contents are not a shmsync object.
    #[error("segment '{name}' is not a valid shmsync object ({detail}); remove it with shmsync::unlink if nothing else uses it")]
    Corrupt {
        /// The segment's name.
        name: String,
        /// What was wrong.
        detail: String,
    },

    /// The segment was not initialised in time: its creator is slow, or died
    /// while initialising it.
    #[error("segment '{name}' was not initialised within {waited:?} ({}); if the creator is dead, remove the segment with shmsync::unlink", creator_state(*.creator_pid, *.creator_alive))]
    InitTimeout {
        /// The segment's name.
        name: String,
        /// The process that began to create it, when it got far enough to say.
        creator_pid: Option<u32>,
        /// Whether that process was still running when the wait ended.
        creator_alive: bool,
        /// How long the opener waited.
        waited: Duration,
    },

    /// The segment's file belongs to another user, whom the caller did not
    /// invite: it could be a squatter's forgery of the object.
    #[error("segment '{name}' is owned by uid {uid}, not by this process's uid {caller}; if that user shares it with you on purpose, open it with builder().allow_owner({uid})")]
    ForeignOwner {
        /// The segment's name.
        name: String,
        /// The file's owner.
        uid: u32,
        /// The caller's effective uid.
        caller: u32,
    },

    /// The permission bits on the segment shut the caller out.
    #[error("permission denied for segment '{name}'; its mode (see builder().mode()) does not admit this user")]
    PermissionDenied {
        /// The segment's name.
        name: String,
    },

    /// `/dev/shm` has no room for the segment.
    #[error("no space in /dev/shm for segment '{name}' ({bytes} bytes); free some segments (shmsync gc) or enlarge /dev/shm")]
    NoSpace {
        /// The segment's name.
        name: String,
        /// The size that did not fit.
        bytes: usize,
    },

    /// An argument is out of its allowed range.
    #[error("invalid argument for '{name}': {detail}")]
    InvalidArgument {
        /// The object's name, or what the argument was for.
        name: String,
        /// What was wrong and what is allowed.
        detail: String,
    },

    /// A `BoundedSemaphore` was released above its initial value.
    #[error("bounded semaphore '{name}' released too many times (it is at its maximum {max}); release only what was acquired")]
    TooManyReleases {
        /// The semaphore's name.
        name: String,
        /// Its maximum value.
        max: u32,
    },

    /// The barrier is broken (by a timeout, `abort` or `reset`).
    #[error("barrier '{name}' is broken (a party timed out, or abort/reset was called); call reset() to use it again")]
    BrokenBarrier {
        /// The barrier's name.
        name: String,
    },

    /// A `Process` was asked to do something that needs it started first.
    #[error("process '{name}' has not been started; call start() before {action}()")]
    ProcessNotStarted {
        /// The process's name.
        name: String,
        /// What was asked.
        action: String,
    },

    /// `start` was called on a `Process` a second time.
    #[error("process '{name}' was already started; a Process can be started only once, so make a new one")]
    ProcessAlreadyStarted {
        /// The process's name.
        name: String,
    },

    /// The other end of a pipe or connection closed or died. Nothing was half
    /// delivered.
    #[error("the peer closed the connection or died; nothing more can be sent or received on it")]
    Disconnected,

    /// The handshake of a `Listener`/`Client` connection failed: the keys
    /// differ, one side has none, or the peer does not speak it. Nothing was
    /// delivered.
    #[error("authentication with '{peer}' failed: {reason}; both sides must use the same authkey (or none)")]
    AuthenticationFailed {
        /// The address of the connection.
        peer: String,
        /// What went wrong.
        reason: String,
    },

    /// A message exceeds a size limit. Nothing was sent, or the oversized
    /// frame was discarded; the channel stays usable.
    #[error("a {len}-byte message exceeds the limit of {max} bytes; raise the limit or send smaller messages")]
    TooLarge {
        /// The message's size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A message could not be encoded for sending.
    #[error("the message cannot be encoded: {detail}; use serde types postcard supports (no untyped values)")]
    Encode {
        /// What postcard said.
        detail: String,
    },

    /// A message or stored value does not decode as the requested type (or
    /// leaves bytes unread). A received message is consumed; the channel or
    /// store stays usable.
    #[error("the data does not decode as the requested type: {detail}; read it as the type it was written with")]
    Decode {
        /// What postcard said.
        detail: String,
    },

    /// A queue or dict has no room for the message or entry; nothing changed.
    #[error("'{name}' is full; wait for room (put_timeout) or make it larger")]
    Full {
        /// The object's name.
        name: String,
    },

    /// `task_done` was called more times than items were put.
    #[error("task_done() called more times than items were put on '{name}'")]
    TooManyTaskDone {
        /// The queue's name.
        name: String,
    },

    /// A pool task panicked; the worker survived.
    #[error("task {index} failed: {message}")]
    TaskFailed {
        /// The item's index in the input.
        index: usize,
        /// The panic's message.
        message: String,
    },

    /// A pool worker died while running a task; it has been replaced.
    #[error("worker pid {pid} died running task {index}{}", signal.map(|s| format!(" (signal {s})")).unwrap_or_default())]
    WorkerDied {
        /// The worker's pid.
        pid: u32,
        /// The item's index in the input.
        index: usize,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },

    /// The pool was closed or terminated; it takes no more tasks.
    #[error("the pool is closed; make a new Pool")]
    PoolClosed,

    /// A `Pool` was used in a process it does not belong to: a forked child
    /// shares its parent's worker sockets, and using them would steal the
    /// parent's results.
    #[error("this Pool belongs to process {owner}; a forked child cannot use its parent's pool, so make a new Pool in the child")]
    ForeignPool {
        /// The pid of the process that made the pool.
        owner: u32,
    },

    /// Every worker of a pool died and none could be started in its place.
    #[error(
        "the pool has no workers left: starting a replacement failed ({reason}); terminate it and make a new Pool"
    )]
    NoWorkers {
        /// Why the last replacement could not be started.
        reason: String,
    },

    /// `Pool::join` was called before `close` or `terminate`.
    #[error("Pool::join called on a pool that is still open; call close() or terminate() first")]
    PoolNotClosed,

    /// The running kernel lacks a facility this call needs.
    #[error("this kernel cannot do it: {detail}")]
    Unsupported {
        /// What is missing, and from which kernel version it exists.
        detail: String,
    },

    /// The etcd lease behind an `etcd::Session` expired or
    /// was revoked: whatever was held through it (an etcd `Lock`, a
    /// `Semaphore` permit) may now be someone else's.
    #[error("etcd lease {lease:x} expired or was revoked, so anything held through it may now be someone else's; stop the work it guarded and connect a new Session")]
    LeaseLost {
        /// The lease id.
        lease: i64,
    },

    /// No etcd endpoint answered in time (refused, silent, or no leader).
    #[error("no etcd endpoint of {endpoints} answered within {waited:?} (last: {detail}); check that etcd runs there, or raise the timeout")]
    EtcdUnreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// How long the call tried.
        waited: Duration,
        /// The last failure seen.
        detail: String,
    },

    /// etcd refused a request, or answered with something that is not a
    /// valid answer to it.
    #[error("etcd {op} failed: {detail}")]
    Etcd {
        /// What was asked, e.g. "lock 'jobs'".
        op: String,
        /// What etcd said, or what was wrong with its answer.
        detail: String,
    },

    /// An operating system call failed in a way no other variant describes.
    #[error("{op} failed for '{name}': {source}")]
    Os {
        /// What the crate was doing.
        op: &'static str,
        /// The object involved.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn creator_state(pid: Option<u32>, alive: bool) -> String {
    match (pid, alive) {
        (Some(pid), false) => format!("its creator, pid {pid}, died while initialising it"),
        (Some(pid), true) => format!("its creator, pid {pid}, is still running"),
        (None, _) => "no creator ever claimed it".to_string(),
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn os(op: &'static str, name: &str, source: impl Into<std::io::Error>) -> Error {
        Error::Os { op, name: name.to_string(), source: source.into() }
    }
}
