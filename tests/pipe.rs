//! Pipe and Connection across real processes: dead peers, oversized frames,
//! bytes of the wrong type.

mod common;

use std::time::Duration;

use common::{fork, serial, DEADLINE};
use shmsync::{pipe, pipe_oneway, Error};

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Msg {
    Hello(String),
    Num(u64),
    Stop,
}

#[test]
fn a_conversation_with_a_child_then_the_peer_exits() {
    let _s = serial();
    let (parent, child_end) = pipe().unwrap();
    let child = fork(|| {
        for _ in 0..3 {
            match child_end.recv::<Msg>() {
                Ok(Msg::Num(n)) => child_end.send(&Msg::Num(n * 2)).unwrap(),
                _ => return 1,
            }
        }
        child_end.send(&Msg::Hello("bye".into())).unwrap();
        0
    });
    for n in 1..=3 {
        parent.send(&Msg::Num(n)).unwrap();
        assert_eq!(parent.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(n * 2)));
    }
    assert_eq!(parent.recv::<Msg>().unwrap(), Msg::Hello("bye".into()));
    child.expect_success();
    // The child's copy of both ends is closed now, but ours of `child_end`
    // is still open; close it to make the peer really gone.
    drop(child_end);
    assert!(parent.poll(DEADLINE).unwrap(), "a dead peer polls as ready");
    assert!(matches!(parent.recv::<Msg>(), Err(Error::Disconnected)));
    assert!(matches!(parent.recv_timeout::<Msg>(Duration::from_millis(10)), Err(Error::Disconnected)));
    assert!(matches!(parent.send(&Msg::Stop), Err(Error::Disconnected)));
}

#[test]
fn a_peer_killed_mid_frame_is_disconnected_not_half_a_message() {
    let _s = serial();
    let (parent, child_end) = pipe().unwrap();
    let mut child = fork(|| {
        // A frame that announces 1000 bytes but brings 10, then stalls.
        let mut half = 1000u64.to_le_bytes().to_vec();
        half.extend_from_slice(&[7u8; 10]);
        use std::io::Write;
        let mut raw = std::fs::File::from(std::os::fd::AsFd::as_fd(&child_end).try_clone_to_owned().unwrap());
        raw.write_all(&half).unwrap();
        std::thread::sleep(DEADLINE);
        0
    });
    drop(child_end);
    // Nothing whole arrives while the peer stalls...
    assert_eq!(parent.recv_bytes_timeout(Duration::from_millis(50)).unwrap(), None);
    child.kill();
    // ...and its death ends the call with Disconnected, not with 10 bytes.
    assert!(matches!(parent.recv_bytes_timeout(DEADLINE), Err(Error::Disconnected)));
}

#[test]
fn a_frame_over_the_limit_is_refused_and_the_connection_stays_usable() {
    let _s = serial();
    let (a, b) = pipe().unwrap();
    let big = vec![0u8; 100 << 20];
    assert!(matches!(a.send_bytes(&big), Err(Error::TooLarge { len, max }) if len == 100 << 20 && max == 64 << 20));
    a.send(&Msg::Num(1)).unwrap();
    assert_eq!(b.recv::<Msg>().unwrap(), Msg::Num(1));

    // A receiver with a lower limit discards the frame and reports it.
    b.set_max_frame(1024);
    let writer = std::thread::spawn(move || {
        a.send_bytes(&vec![1u8; 1 << 20]).unwrap();
        a.send(&Msg::Stop).unwrap();
        a
    });
    assert!(matches!(b.recv_bytes_timeout(DEADLINE), Err(Error::TooLarge { max: 1024, .. })));
    assert_eq!(b.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Stop));
    drop(writer.join().unwrap());
}

#[test]
fn bytes_of_the_wrong_type_are_a_decode_error_and_the_connection_stays_usable() {
    let _s = serial();
    let (r, s) = pipe_oneway().unwrap();
    s.send(&"not a Msg at all, and long enough to leave bytes").unwrap();
    s.send_bytes(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    s.send(&Msg::Hello("ok".into())).unwrap();
    assert!(matches!(r.recv::<Msg>(), Err(Error::Decode { .. })));
    assert!(matches!(r.recv::<Msg>(), Err(Error::Decode { .. })));
    assert_eq!(r.recv::<Msg>().unwrap(), Msg::Hello("ok".into()));
    assert!(!r.poll(Duration::from_millis(10)).unwrap());
}

#[test]
fn python_outline_value_crosses_to_the_parent() {
    let _s = serial();
    let (parent, child_end) = pipe().unwrap();
    let child = fork(|| {
        child_end.send(&(42u32, None::<u8>, "hello".to_string())).unwrap();
        0
    });
    let got: (u32, Option<u8>, String) = parent.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(got, (42, None, "hello".into()));
    child.expect_success();
}

#[test]
fn recv_timeout_ends_at_its_deadline_while_another_thread_blocks_in_recv() {
    let _s = serial();
    let (a, b) = pipe().unwrap();
    let a = std::sync::Arc::new(a);
    let blocked = std::sync::Arc::clone(&a);
    let reader = std::thread::spawn(move || blocked.recv::<Msg>());
    std::thread::sleep(Duration::from_millis(100));
    // The other thread sits in a blocking receive; a timed one here must
    // still end at its own deadline.
    let timed = std::sync::Arc::clone(&a);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send((timed.recv_timeout::<Msg>(Duration::from_millis(50)), timed.poll(Duration::from_millis(50))));
    });
    let (got, polled) = rx.recv_timeout(DEADLINE).expect("recv_timeout overran its deadline");
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert!(matches!(polled, Ok(false)), "{polled:?}");
    b.send(&Msg::Num(5)).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), Msg::Num(5));
}

#[test]
fn a_receiver_that_fell_behind_gets_every_frame_of_a_large_backlog_in_order() {
    let _s = serial();
    let (a, b) = pipe().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..20_000u64 {
            a.send(&Msg::Num(i)).unwrap();
        }
        // Large frames interleaved with small ones.
        for i in 0..8u64 {
            a.send_bytes(&vec![i as u8; (1 << 20) + i as usize]).unwrap();
            a.send(&Msg::Num(i)).unwrap();
        }
        a
    });
    for i in 0..20_000u64 {
        assert_eq!(b.recv_timeout::<Msg>(DEADLINE).unwrap(), Some(Msg::Num(i)));
    }
    for i in 0..8u64 {
        let big = b.recv_bytes_timeout(DEADLINE).unwrap().unwrap();
        assert_eq!(big.len(), (1 << 20) + i as usize);
        assert!(big.iter().all(|&x| x == i as u8));
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Num(i));
    }
    drop(writer.join().unwrap());
}
