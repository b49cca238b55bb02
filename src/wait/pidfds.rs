//! `Process::join_async`: one thread per process polls the pidfds of the
//! children that async joins wait for, and wakes their tasks when a child
//! ends.
//!
//! The thread sleeps in `poll(2)` over the registered pidfds and an eventfd
//! that a new registration signals; with nothing registered it sleeps on
//! the eventfd alone. A registration holds its own duplicate of the pidfd,
//! so the descriptor polled stays valid whatever happens to the Process.

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::process::Process;
use crate::sys::child;

struct Waiting {
    id: u64,
    fd: OwnedFd,
    waker: Waker,
}

struct Poller {
    pid: u32,
    waiting: Mutex<(u64, Vec<Waiting>)>,
    control: OwnedFd,
}

static POLLER: Mutex<Option<Arc<Poller>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's poller, started when first needed (again in a forked
/// child, whose copy has no thread).
fn poller() -> Result<Arc<Poller>> {
    let mut slot = lock(&POLLER);
    let me = std::process::id();
    if let Some(p) = slot.as_ref().filter(|p| p.pid == me) {
        return Ok(Arc::clone(p));
    }
    let control = child::eventfd().map_err(|e| Error::os("eventfd", "join_async", e))?;
    let p = Arc::new(Poller { pid: me, waiting: Mutex::new((0, Vec::new())), control });
    let runner = Arc::clone(&p);
    std::thread::Builder::new()
        .name("shmsync-join".to_string())
        .spawn(move || run(&runner))
        .map_err(|e| Error::os("spawn", "join_async", e))?;
    *slot = Some(Arc::clone(&p));
    Ok(p)
}

fn run(p: &Poller) {
    loop {
        let fds: Vec<(u64, OwnedFd)> = {
            let waiting = lock(&p.waiting);
            waiting.1.iter().filter_map(|w| w.fd.try_clone().ok().map(|fd| (w.id, fd))).collect()
        };
        let mut polled: Vec<nix::poll::PollFd<'_>> =
            vec![nix::poll::PollFd::new(p.control.as_fd(), nix::poll::PollFlags::POLLIN)];
        polled.extend(fds.iter().map(|(_, fd)| nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN)));
        match nix::poll::poll(&mut polled, nix::poll::PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                log::error!("shmsync: the async join poller failed: {e}");
                return;
            }
        }
        child::eventfd_drain(&p.control);
        let ended: Vec<u64> = fds
            .iter()
            .zip(&polled[1..])
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|((id, _), _)| *id)
            .collect();
        let wakers: Vec<Waker> = {
            let mut waiting = lock(&p.waiting);
            let mut wakers = Vec::new();
            waiting.1.retain(|w| {
                let done = ended.contains(&w.id);
                if done {
                    wakers.push(w.waker.clone());
                }
                !done
            });
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The future of [`Process::join_async`].
struct Join<'a> {
    process: &'a Process,
    registered: Option<(Arc<Poller>, u64)>,
}

impl Join<'_> {
    fn deregister(&mut self) {
        if let Some((p, id)) = self.registered.take() {
            lock(&p.waiting).1.retain(|w| w.id != id);
        }
    }
}

impl Future for Join<'_> {
    type Output = Result<i32>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<i32>> {
        let this = self.get_mut();
        if this.process.pid().is_none() {
            return Poll::Ready(Err(Error::ProcessNotStarted {
                name: this.process.name().to_string(),
                action: "join_async".to_string(),
            }));
        }
        loop {
            if let Some(code) = this.process.exitcode() {
                this.deregister();
                return Poll::Ready(Ok(code));
            }
            if let Some((p, id)) = &this.registered {
                let mut waiting = lock(&p.waiting);
                if let Some(w) = waiting.1.iter_mut().find(|w| w.id == *id) {
                    w.waker.clone_from(cx.waker());
                    return Poll::Pending;
                }
                // Fired: look again.
                drop(waiting);
                this.registered = None;
                continue;
            }
            let registered = (|| -> Result<(Arc<Poller>, u64)> {
                let p = poller()?;
                let fd =
                    this.process.as_fd().try_clone_to_owned().map_err(|e| Error::os("dup", this.process.name(), e))?;
                let id = {
                    let mut waiting = lock(&p.waiting);
                    waiting.0 += 1;
                    let id = waiting.0;
                    waiting.1.push(Waiting { id, fd, waker: cx.waker().clone() });
                    id
                };
                child::eventfd_signal(&p.control);
                Ok((p, id))
            })();
            match registered {
                Ok(r) => this.registered = Some(r),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // The child may have ended before the poller saw its pidfd: look
            // once more before sleeping.
        }
    }
}

impl Drop for Join<'_> {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl Process {
    /// Waits, asynchronously, for the child to end, and returns its exit code
    /// as [`join`](Self::join) does. `Err(ProcessNotStarted)` before `start`.
    /// Works with any runtime: one thread of this process polls the pidfds
    /// of the children being awaited.
    pub fn join_async(&self) -> impl Future<Output = Result<i32>> + Send + '_ {
        Join { process: self, registered: None }
    }
}
