//! The study's sections, in report order: the one list to extend.
//!
//! To add a section (an RwLock, `wait_any`, Listener/Client or etcd, say):
//! write a module with a `pub static SECTION: Section` whose `setup` makes
//! its probes (each one a [`crate::model::Probe`]: one checked sample per
//! call, every wait bounded, nothing left behind), declare the module in
//! `main.rs` and add it here. A section that cannot run on this machine
//! (no etcd, no `python3`) returns no probes and a note saying why; the
//! report prints the note. Python rows go beside ours in the same section
//! ([`crate::python::session`], then `Session::probe`), naming their
//! counterpart, and so appear in the "Python vs shmsync" table as well.
//! Mechanisms that stream messages plug into `common::messages::Kind`
//! instead, and appear in both message sections at once.

use crate::model::Section;
use crate::{connections, etcd, messages, pool, primitives, roundtrip, rwlock};

/// Every section, in order; the report numbers them so.
pub static ALL: &[&Section] = &[
    &primitives::uncontended::SECTION,
    &primitives::handoff::SECTION,
    &primitives::contended::SECTION,
    &rwlock::SECTION,
    &messages::SECTION,
    &roundtrip::SECTION,
    &pool::SECTION,
    &connections::SECTION,
    &etcd::SECTION,
];

/// The heading of `section`: its number and title.
pub fn heading(section: &Section) -> String {
    let n = ALL.iter().position(|s| std::ptr::eq(*s, section)).map_or(0, |i| i + 1);
    format!("{n}. {}", section.title)
}
