//! Manager: shared state that processes change by name. Ten processes each
//! write `d[i] = i * 2` into a shared `Dict`, and the parent, once it has
//! joined them, prints the whole dict. Then a `Namespace` variant: a producer
//! sets a field and an `Event` announces it; a consumer looks at the field
//! before the event (it is not there yet) and after it.
//!
//! Python's `Manager` is a server process the others talk to; shmsync's
//! `Dict` and `Namespace` live in named shared memory instead, under a robust
//! lock, with no server. `to_map` returns a `BTreeMap`, so the keys come out
//! sorted; it is printed like Python's dict. As in Python, reading a field
//! that is not set is the "error" case (here `Ok(None)` rather than an
//! `AttributeError`). To make the order certain, the producer waits until
//! the consumer has had its first look.
//!
//! Run: `cargo run --release --example manager`
//!
//! Expected output:
//! ```text
//! Results: {0: 0, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12, 7: 14, 8: 16, 9: 18}
//! Before event, error: the namespace has no field 'value'
//! After event: This is the value
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::{Debug, Write};
use std::sync::Arc;
use std::time::Duration;

use shmsync::{Dict, Event, Namespace, Process};

#[path = "support/mod.rs"]
mod support;
use support::join_ok;

const DEADLINE: Duration = Duration::from_secs(10);

fn worker(d: &Dict<u32, u32>, key: u32, value: u32) -> shmsync::Result<()> {
    d.insert(&key, &value)?;
    Ok(())
}

/// A map as Python prints a dict: `{0: 0, 1: 2}`.
fn dict_repr<K: Debug, V: Debug>(map: &BTreeMap<K, V>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in map.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(s, "{sep}{k:?}: {v:?}");
    }
    s.push('}');
    s
}

/// Publishes the value, then announces it; first waits for the consumer's
/// first look, so that "Before event" always comes before.
fn producer(ns: &Namespace, looked: &Event, event: &Event) -> Result<(), String> {
    if !looked.wait_timeout(DEADLINE) {
        return Err(format!("the consumer did not look within {DEADLINE:?}"));
    }
    ns.set("value", &"This is the value".to_string()).map_err(|e| e.to_string())?;
    event.set();
    Ok(())
}

fn consumer(ns: &Namespace, looked: &Event, event: &Event) -> Result<(), String> {
    match ns.get::<String>("value") {
        Ok(Some(value)) => println!("Before event: {value}"),
        Ok(None) => println!("Before event, error: the namespace has no field 'value'"),
        Err(e) => println!("Before event, error: {e}"),
    }
    looked.set();
    if !event.wait_timeout(DEADLINE) {
        return Err(format!("the event was not set within {DEADLINE:?}"));
    }
    let value = ns.get::<String>("value").map_err(|e| e.to_string())?.ok_or("the field is not set")?;
    println!("After event: {value}");
    Ok(())
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let d = Arc::new(Dict::<u32, u32>::new(4096)?);
    let jobs: Vec<Process> = (0..10)
        .map(|i| {
            let d = Arc::clone(&d);
            Process::new(move || worker(&d, i, i * 2))
        })
        .collect();
    for j in &jobs {
        j.start()?;
    }
    for j in &jobs {
        join_ok(j)?;
    }
    println!("Results: {}", dict_repr(&d.to_map()?));

    let ns = Arc::new(Namespace::new(4096)?);
    let looked = Arc::new(Event::new()?);
    let event = Arc::new(Event::new()?);
    let c = Process::new({
        let (ns, looked, event) = (Arc::clone(&ns), Arc::clone(&looked), Arc::clone(&event));
        move || consumer(&ns, &looked, &event)
    });
    let p = Process::new({
        let (ns, looked, event) = (Arc::clone(&ns), Arc::clone(&looked), Arc::clone(&event));
        move || producer(&ns, &looked, &event)
    });
    c.start()?;
    p.start()?;
    join_ok(&c)?;
    join_ok(&p)?;
    Ok(())
}
