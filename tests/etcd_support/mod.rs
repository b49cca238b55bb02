//! Real etcd servers for the etcd tests and benches.
//!
//! [`Cluster::start`] runs `n` members of Debian's `etcd-server` (3.4) on
//! loopback, on ports found free at run time, each in its own temporary
//! data directory, and waits until the cluster has a leader. Dropping the
//! cluster kills every member and removes the directories, also when a test
//! panics. Members get `PR_SET_PDEATHSIG`, so even a test binary that is
//! aborted or killed takes its servers with it.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader at start.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Where `etcd` is on PATH (Debian's `etcd-server` puts it in /usr/bin).
pub fn etcd_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// Whether this run is CI's (`.ci/run` sets `SHMSYNC_CI=1`).
pub fn in_ci() -> bool {
    std::env::var("SHMSYNC_CI").is_ok_and(|v| v == "1")
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
    dir: PathBuf,
}

impl Member {
    /// The tail of this member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running etcd cluster of one or more members on loopback.
pub struct Cluster {
    pub members: Vec<Member>,
    root: PathBuf,
}

/// `n` ports that were free a moment ago (bound together, so distinct).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// A plain HTTP/1.0 request, for health checks (no client library needed).
pub fn http(url: &str, method: &str, path: &str, body: &str, timeout: Duration) -> Option<String> {
    let hostport = url.strip_prefix("http://")?;
    let addr = hostport.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut s, req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

impl Cluster {
    /// Starts `n` members and waits for a leader; panics (after cleaning
    /// up) if that does not happen within 30 s, showing the members' logs.
    pub fn start(n: usize) -> Cluster {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let binary = etcd_binary().expect("etcd is not installed (apt-get install etcd-server)");
        let id = format!("{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let tmp = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let root = tmp.join(format!("shmsync-etcd-{id}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the etcd test directory");
        let ports = free_ports(2 * n);
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                child: None,
                dir: root.join(format!("m{i}")),
            })
            .collect();
        let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let initial = initial.join(",");
        for m in &mut members {
            std::fs::create_dir_all(&m.dir).expect("create a member directory");
            let log = std::fs::File::create(m.dir.join("etcd.log")).expect("create the member log");
            let mut cmd = Command::new(&binary);
            cmd.args(["--name", &m.name])
                .arg("--data-dir")
                .arg(m.dir.join("data"))
                .args(["--listen-client-urls", &m.client_url, "--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url, "--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("shmsync-test-{id}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            // SAFETY: the closure runs in the forked child before exec and
            // only calls prctl, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            m.child = Some(cmd.spawn().expect("start etcd"));
        }
        let cluster = Cluster { members, root };
        let started = Instant::now();
        while !cluster.members.iter().all(|m| cluster.healthy(m)) {
            if started.elapsed() > START_DEADLINE {
                let logs: Vec<String> =
                    cluster.members.iter().map(|m| format!("--- {} ---\n{}", m.name, m.log_tail())).collect();
                panic!("etcd cluster of {n} did not become healthy within {START_DEADLINE:?}:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn healthy(&self, m: &Member) -> bool {
        http(&m.client_url, "GET", "/health", "", Duration::from_secs(1)).is_some_and(|b| b.contains("\"true\""))
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The index of the current leader, asking the running members.
    pub fn leader(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.is_running()) {
            let Some(body) = http(&m.client_url, "POST", "/v3/maintenance/status", "{}", Duration::from_secs(2)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
            let (Some(me), Some(leader)) = (v["header"]["member_id"].as_str(), v["leader"].as_str()) else {
                continue;
            };
            if me == leader {
                return self.members.iter().position(|x| x.client_url == m.client_url);
            }
        }
        None
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
