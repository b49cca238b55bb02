//! A section of the study: across hosts, what the etcd Lock costs against
//! one etcd put from the same client, and the local Lock for scale.
//!
//! Runs only when the bench is built with `--features etcd` and `etcd`
//! (Debian's `etcd-server`) is on PATH; otherwise the section says why it
//! has no rows. It starts a 1-member etcd on loopback in a temporary
//! directory for the section and stops it when the section's probes drop.
//!
//! Rows, all uncontended in one process, each sample the mean of N calls:
//! - `etcd put (same client)`, the floor: one `/v3/kv/put`, one round
//!   trip and one raft commit;
//! - `etcd Lock lock + unlock`: one transaction to take the lock, one to
//!   release it; its "× floor" is the ratio the design answers for (at most
//!   3× a put);
//! - `shmsync Lock lock + unlock (local)`, in ns, for scale.

use crate::model::{PlotKind, Section, Setup};

pub static SECTION: Section = Section {
    slug: "etcd",
    title: "Across hosts: the etcd Lock",
    about: "What the etcd `Lock` costs against one etcd put from the same client (the floor: one round trip \
            and one raft commit), with the local `Lock` for scale. Uncontended, in one process, against a \
            1-member etcd on loopback over its JSON gateway; each sample is the mean of N calls. Needs \
            `--features etcd` and `etcd` on `PATH`.",
    plot: PlotKind::Bars,
    baseline: None,
    setup,
};

/// The section's probes, or why there are none.
fn setup(_quick: bool) -> Setup {
    let (probes, notes) = imp::probes();
    Setup { probes, notes }
}

#[cfg(not(feature = "etcd"))]
mod imp {
    use crate::model::Probe;

    pub fn probes() -> (Vec<Box<dyn Probe>>, Vec<String>) {
        let why = "etcd was not measured: the bench was built without the `etcd` feature \
                   (run `cargo bench --features etcd --bench ipc_cost -- etcd`)";
        (vec![], vec![why.into()])
    }
}

#[cfg(feature = "etcd")]
#[path = "../../tests/etcd_support/mod.rs"]
mod support;

#[cfg(feature = "etcd")]
mod imp {
    use std::hint::black_box;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use shmsync::etcd::{self, Lock, Session};

    use super::support::{etcd_binary, Cluster};
    use crate::model::{Key, Probe, Sample, Unit};

    /// Calls per sample, full and quick.
    const ETCD_CALLS: [u32; 2] = [200, 20];
    /// Local lock pairs per sample, full and quick.
    const LOCAL_PAIRS: [u32; 2] = [200_000, 20_000];

    /// The server and the client every probe of the section shares. The
    /// session drops before the cluster (field order).
    struct Env {
        lock: Lock,
        session: Session,
        _cluster: Cluster,
    }

    #[derive(Clone, Copy)]
    enum What {
        Put,
        LockUnlock,
        Local,
    }

    struct EtcdProbe {
        env: Rc<Env>,
        what: What,
        local: Option<shmsync::Lock>,
    }

    impl Probe for EtcdProbe {
        fn key(&self) -> Key {
            let (mechanism, variant) = match self.what {
                What::Put => ("etcd put (same client)", "1-member etcd on loopback"),
                What::LockUnlock => ("etcd Lock lock + unlock", "1-member etcd on loopback"),
                What::Local => ("shmsync Lock lock + unlock (local)", "one host, for scale"),
            };
            Key { section: super::SECTION.slug, mechanism: mechanism.into(), variant: variant.into() }
        }

        fn unit(&self) -> Unit {
            match self.what {
                What::Local => Unit::NanosPerOp,
                _ => Unit::MicrosPerOp,
            }
        }

        fn is_floor(&self) -> bool {
            matches!(self.what, What::Put)
        }

        fn sample(&mut self, quick: bool) -> Result<Sample, String> {
            let mode = usize::from(quick);
            let started = Instant::now();
            let n = match self.what {
                What::Put => {
                    for _ in 0..ETCD_CALLS[mode] {
                        let rev = etcd::__private::put(&self.env.session, b"ipc_cost/put", b"value")
                            .map_err(|e| e.to_string())?;
                        if rev <= 0 {
                            return Err(format!("etcd put answered revision {rev}"));
                        }
                    }
                    ETCD_CALLS[mode]
                }
                What::LockUnlock => {
                    for _ in 0..ETCD_CALLS[mode] {
                        let guard = self.env.lock.lock().map_err(|e| e.to_string())?;
                        let guard = guard.map_err(|_| "the bench lock is poisoned".to_string())?;
                        guard.unlock().map_err(|e| e.to_string())?;
                    }
                    ETCD_CALLS[mode]
                }
                What::Local => {
                    let lock = self.local.as_ref().ok_or("no local lock")?;
                    for _ in 0..LOCAL_PAIRS[mode] {
                        drop(black_box(lock.lock().map_err(|_| "the local lock is poisoned")?));
                    }
                    LOCAL_PAIRS[mode]
                }
            };
            let per_op = started.elapsed().as_secs_f64() / f64::from(n);
            let value = match self.what {
                What::Local => per_op * 1e9,
                _ => per_op * 1e6,
            };
            Ok(Sample::new(value))
        }
    }

    pub fn probes() -> (Vec<Box<dyn Probe>>, Vec<String>) {
        if etcd_binary().is_none() {
            let why = "etcd was not measured: `etcd` is not on PATH (apt-get install etcd-server)";
            return (vec![], vec![why.into()]);
        }
        let cluster = Cluster::start(1);
        let session = Session::connect(cluster.endpoints(), Duration::from_secs(10)).expect("connect to the etcd");
        let lock = Lock::open(&session, "ipc_cost").expect("open the etcd lock");
        let env = Rc::new(Env { lock, session, _cluster: cluster });
        let local = shmsync::Lock::new().expect("make a local lock");
        let probes: Vec<Box<dyn Probe>> = vec![
            Box::new(EtcdProbe { env: Rc::clone(&env), what: What::Put, local: None }),
            Box::new(EtcdProbe { env: Rc::clone(&env), what: What::LockUnlock, local: None }),
            Box::new(EtcdProbe { env, what: What::Local, local: Some(local) }),
        ];
        let note = "The etcd rows are round trips to a 1-member etcd on loopback over its JSON gateway; \
                    the goal is lock + unlock at most 3× one put (its × floor).";
        (probes, vec![note.into()])
    }
}
