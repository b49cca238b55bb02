//! Listener and Client across real processes and real sockets (loopback
//! only), and descriptor passing: order, authentication, abuse, many
//! clients, no leaked descriptors.
#![cfg(feature = "connection")]

mod common;

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{fork, serial, DEADLINE};
use shmsync::connection::{Address, Client, Listener};
use shmsync::Error;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Msg {
    Num(u64),
    Text(String),
}

const KEY: &[u8] = b"a shared secret of some length";

/// A Unix path, an abstract name and a TCP address, each unique to this
/// process and test.
fn addresses(test: &str) -> Vec<Address> {
    let pid = std::process::id();
    vec![
        Address::Unix(std::env::temp_dir().join(format!("shmsync-test-{pid}-{test}.sock"))),
        Address::Abstract(format!("shmsync-test-{pid}-{test}").into_bytes()),
        Address::Tcp("127.0.0.1:0".to_string()),
    ]
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn unix_path_abstract_and_tcp_each_carry_10000_typed_messages_in_order_both_ways() {
    let _s = serial();
    const N: u64 = 10_000;
    for addr in addresses("order") {
        let listener = Listener::bind(addr.clone(), Some(KEY)).unwrap();
        let bound = listener.address().clone();
        let child = fork(|| {
            let conn = Client::connect_timeout(&bound, Some(KEY), DEADLINE).unwrap();
            for i in 0..N {
                conn.send(&Msg::Num(i)).unwrap();
            }
            for i in 0..N {
                match conn.recv_timeout::<Msg>(DEADLINE) {
                    Ok(Some(Msg::Text(t))) if t == format!("m{i}") => {}
                    other => panic!("message {i}: {other:?}"),
                }
            }
            0
        });
        let conn = listener.accept_timeout(DEADLINE).unwrap().expect("the client connects");
        for i in 0..N {
            assert_eq!(conn.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(i)), "{addr}: message {i}");
        }
        for i in 0..N {
            conn.send(&Msg::Text(format!("m{i}"))).unwrap();
        }
        child.expect_success();
        assert!(matches!(conn.recv_timeout::<Msg>(DEADLINE), Err(Error::Disconnected)));
        let unix_file = match &addr {
            Address::Unix(p) => Some(p.clone()),
            _ => None,
        };
        drop(listener);
        if let Some(p) = unix_file {
            assert!(!p.exists(), "the listener left its socket file");
        }
    }
}

#[test]
fn a_wrong_authkey_fails_on_both_sides_and_delivers_nothing() {
    let _s = serial();
    for addr in addresses("wrongkey") {
        // (listener key, client key): a wrong key, and a key on one side only.
        for (lkey, ckey) in [(Some(KEY), Some(&b"not the key"[..])), (Some(KEY), None), (None, Some(KEY))] {
            let listener = Listener::bind(addr.clone(), lkey).unwrap();
            let bound = listener.address().clone();
            let child = fork(|| match Client::connect_timeout(&bound, ckey, DEADLINE) {
                Err(Error::AuthenticationFailed { .. }) => 0,
                Ok(conn) => {
                    let _ = conn.send(&Msg::Text("smuggled".into()));
                    1
                }
                Err(_) => 2,
            });
            match listener.accept_timeout(DEADLINE) {
                Err(Error::AuthenticationFailed { .. }) => {}
                Ok(Some(conn)) => {
                    panic!("{addr}: accepted a client with the wrong key: {:?}", conn.recv_timeout::<Msg>(DEADLINE))
                }
                other => panic!("{addr}: {other:?}"),
            }
            child.expect_success();
        }
    }
}

#[test]
fn a_stalled_or_garbage_client_does_not_block_another_clients_accept() {
    let _s = serial();
    for addr in addresses("stall") {
        // A long handshake deadline: the good client must not be served
        // merely because the stalled one timed out.
        let listener =
            Listener::builder(addr.clone()).authkey(KEY).handshake_timeout(Duration::from_secs(60)).bind().unwrap();
        let bound = listener.address().clone();
        let stalled = fork(|| {
            // Connect, then say nothing.
            let _sock = raw_connect(&bound);
            std::thread::sleep(DEADLINE);
            0
        });
        let garbage = fork(|| {
            let mut sock = raw_connect(&bound);
            // A frame header announcing a huge frame, then noise.
            let _ = sock.write_all(&u64::MAX.to_le_bytes());
            let _ = sock.write_all(&[0xab; 100]);
            std::thread::sleep(DEADLINE);
            0
        });
        // Let both be accepted and pending first.
        std::thread::sleep(Duration::from_millis(200));
        let _ = listener.accept_timeout(Duration::from_millis(200)).unwrap();
        let good = fork(|| {
            let conn = Client::connect_timeout(&bound, Some(KEY), DEADLINE).unwrap();
            conn.send(&Msg::Text("good".into())).unwrap();
            0
        });
        let conn = listener.accept_timeout(DEADLINE).unwrap().expect("the good client is served");
        assert_eq!(conn.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Text("good".into())));
        good.expect_success();
        drop((stalled, garbage));
    }
}

/// A socket to `addr` that speaks no handshake.
fn raw_connect(addr: &Address) -> Box<dyn Write> {
    use std::os::linux::net::SocketAddrExt;
    match addr {
        Address::Unix(p) => Box::new(std::os::unix::net::UnixStream::connect(p).unwrap()),
        Address::Abstract(n) => Box::new(
            std::os::unix::net::UnixStream::connect_addr(
                &std::os::unix::net::SocketAddr::from_abstract_name(n).unwrap(),
            )
            .unwrap(),
        ),
        Address::Tcp(a) => Box::new(std::net::TcpStream::connect(a).unwrap()),
    }
}

#[test]
fn fifty_clients_connecting_at_once_are_all_served() {
    let _s = serial();
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let bound = listener.address().clone();
    let children: Vec<_> = (0..50u64)
        .map(|id| {
            let bound = bound.clone();
            fork(move || {
                let conn = Client::connect_timeout(&bound, Some(KEY), DEADLINE).unwrap();
                conn.send(&Msg::Num(id)).unwrap();
                i32::from(conn.recv_timeout::<Msg>(DEADLINE).unwrap() != Some(Msg::Num(id * 2)))
            })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let conn = listener.accept_timeout(DEADLINE).unwrap().expect("a client");
        let Some(Msg::Num(id)) = conn.recv_timeout::<Msg>(DEADLINE).unwrap() else { panic!("no id") };
        conn.send(&Msg::Num(id * 2)).unwrap();
        seen.push(id);
    }
    for c in children {
        c.expect_success();
    }
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
}

#[test]
fn a_keyless_listener_on_a_non_loopback_tcp_address_is_refused_unless_allowed() {
    let _s = serial();
    assert!(matches!(Listener::bind("0.0.0.0:0", None), Err(Error::InvalidArgument { .. })));
    assert!(Listener::bind("0.0.0.0:0", Some(KEY)).is_ok());
    assert!(Listener::builder("0.0.0.0:0").allow_unauthenticated_remote(true).bind().is_ok());
    assert!(Listener::bind("127.0.0.1:0", None).is_ok());
}

#[test]
fn a_child_writes_to_a_file_through_a_descriptor_it_received_and_nothing_leaks() {
    let _s = serial();
    let path = std::env::temp_dir().join(format!("shmsync-test-{}-sendfd.txt", std::process::id()));
    let before = open_fds();
    {
        let file = std::fs::File::create(&path).unwrap();
        let (ours, theirs) = shmsync::pipe().unwrap();
        let child = fork(|| {
            let fd = theirs.recv_fd_timeout(DEADLINE).unwrap().expect("a descriptor");
            let mut f = std::fs::File::from(fd);
            f.write_all(b"written by the child").unwrap();
            theirs.send(&Msg::Text("done".into())).unwrap();
            0
        });
        ours.send_fd(&file).unwrap();
        assert_eq!(ours.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Text("done".into())));
        child.expect_success();
    }
    let mut text = String::new();
    std::fs::File::open(&path).unwrap().read_to_string(&mut text).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(text, "written by the child");
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn send_fd_works_over_unix_listener_connections_and_is_refused_over_tcp() {
    let _s = serial();
    let name = format!("@shmsync-test-{}-fdlisten", std::process::id());
    let listener = Listener::bind(name.as_str(), Some(KEY)).unwrap();
    let mut file = tempfile_in_memory();
    let child = fork(|| {
        let conn = Client::connect_timeout(name.as_str(), Some(KEY), DEADLINE).unwrap();
        let mut f = std::fs::File::from(conn.recv_fd_timeout(DEADLINE).unwrap().unwrap());
        f.write_all(b"via a listener").unwrap();
        conn.send(&Msg::Num(0)).unwrap();
        0
    });
    let conn = listener.accept_timeout(DEADLINE).unwrap().unwrap();
    conn.send_fd(&file).unwrap();
    assert_eq!(conn.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(0)));
    child.expect_success();
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "via a listener");

    let tcp = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let bound = tcp.address().clone();
    let client = std::thread::spawn(move || Client::connect_timeout(&bound, Some(KEY), DEADLINE).unwrap());
    let server_side = tcp.accept_timeout(DEADLINE).unwrap().unwrap();
    let client_side = client.join().unwrap();
    assert!(matches!(client_side.send_fd(&file), Err(Error::InvalidArgument { .. })));
    // Nothing was sent: the connection carries on.
    client_side.send(&Msg::Num(9)).unwrap();
    assert_eq!(server_side.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(9)));
}

fn tempfile_in_memory() -> std::fs::File {
    let fd = nix::sys::memfd::memfd_create("shmsync-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    std::fs::File::from(fd)
}

#[test]
fn descriptors_sent_beside_ordinary_messages_are_closed_never_leaked() {
    let _s = serial();
    let (a, b) = shmsync::pipe().unwrap();
    let file = tempfile_in_memory();
    let before = open_fds();
    // An ordinary frame with a descriptor attached, as a foreign or buggy
    // peer might send it.
    let payload = postcard::to_allocvec(&Msg::Num(5)).unwrap();
    let mut frame = (payload.len() as u64).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let fds = [std::os::fd::AsRawFd::as_raw_fd(&file)];
    for _ in 0..3 {
        nix::sys::socket::sendmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&a.as_fd()),
            &[std::io::IoSlice::new(&frame)],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
    }
    assert_eq!(b.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(5)));
    assert_eq!(b.recv::<Msg>().unwrap(), Msg::Num(5));
    // recv_fd on an ordinary message: Decode, and the descriptor is closed.
    assert!(matches!(b.recv_fd_timeout(DEADLINE), Err(Error::Decode { .. })));
    assert_eq!(open_fds(), before, "a descriptor that came with an ordinary message was kept");
    // And a descriptor frame read as a message: Decode, descriptor closed.
    a.send_fd(&file).unwrap();
    a.send(&Msg::Num(6)).unwrap();
    assert!(matches!(b.recv::<Msg>(), Err(Error::Decode { .. })));
    assert_eq!(b.recv::<Msg>().unwrap(), Msg::Num(6));
    assert_eq!(open_fds(), before, "a descriptor read as a message was kept");
}

#[test]
fn connect_timeout_ends_at_its_deadline_when_the_listeners_backlog_is_full() {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::{AsRawFd, OwnedFd};
    let _s = serial();
    let name = format!("@shmsync-test-backlog-{}", std::process::id());
    let _listener = Listener::bind(name.as_str(), None).unwrap();
    // Fill the backlog of a listener that never accepts.
    let target = UnixAddr::new_abstract(&name.as_bytes()[1..]).unwrap();
    let mut held: Vec<OwnedFd> = Vec::new();
    loop {
        assert!(held.len() < 100_000, "the backlog never filled");
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).unwrap();
        match connect(fd.as_raw_fd(), &target) {
            Ok(()) => held.push(fd),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("connect: {e}"),
        }
    }
    let started = std::time::Instant::now();
    let outcome = Client::connect_timeout(name.as_str(), None, Duration::from_millis(200));
    match outcome {
        Err(Error::Os { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < DEADLINE, "connect_timeout overran its deadline");
}
