#!/usr/bin/env python3
"""Python's multiprocessing, measured for the ipc_cost study (section 6).

Usage: python3 mp_bench.py MEASUREMENT [quick]

MEASUREMENT is one of:
  lock   multiprocessing.Lock acquire + release, uncontended, ns per pair
  event  Event round trip between two processes (two Events ping-pong), us
  pipe   Pipe message rate at 64 B (Connection.send_bytes / recv_bytes), msg/s

Prints one JSON object on stdout: {"measurement", "unit", "value", "ops",
and "p50"/"p99" for the round trip}. Uses only the standard library and the
fork start method, as shmsync forks. Every wait is bounded: Event.wait and
Connection.poll take timeouts, and SIGALRM ends a process that overruns
(the Rust side also kills the whole process group after its own deadline).
Any failed check raises, so the exit status is non-zero.
"""

import json
import signal
import sys
import time
import multiprocessing as mp

# Seconds any one process may run before SIGALRM ends it.
DEADLINE = 60
# Seconds any one wait may take.
WAIT = 10.0

CTX = mp.get_context("fork")


def arm_deadline():
    # SIGALRM's default action terminates the process.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(DEADLINE)


def lock(quick):
    n = 50_000 if quick else 1_000_000
    lk = CTX.Lock()
    acquire, release = lk.acquire, lk.release
    # One untimed pass, so the first-call costs are out of the timing.
    for _ in range(1000):
        acquire()
        release()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    ns = time.perf_counter_ns() - t0
    if not acquire(False):
        raise RuntimeError("lock left held after the loop")
    release()
    return {"unit": "ns/op", "value": ns / n, "ops": n}


def _event_child(ping, pong, n):
    arm_deadline()
    # n timed round trips plus one untimed.
    for i in range(n + 1):
        if not ping.wait(WAIT):
            raise SystemExit(f"round trip {i}: no ping within {WAIT} s")
        ping.clear()
        pong.set()


def event(quick):
    n = 500 if quick else 5_000
    ping, pong = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_event_child, args=(ping, pong, n), daemon=True)
    child.start()
    try:
        times = []
        for i in range(n + 1):
            t0 = time.perf_counter_ns()
            ping.set()
            if not pong.wait(WAIT):
                raise RuntimeError(f"round trip {i}: no pong within {WAIT} s")
            pong.clear()
            if i > 0:
                times.append(time.perf_counter_ns() - t0)
        child.join(WAIT)
        if child.exitcode != 0:
            raise RuntimeError(f"the event child exited with {child.exitcode}")
    finally:
        if child.is_alive():
            child.kill()
            child.join(WAIT)
    if len(times) != n:
        raise RuntimeError(f"{len(times)} of {n} round trips timed")
    times.sort()
    us = [t / 1000 for t in times]
    return {
        "unit": "us/op",
        "value": sum(us) / n,
        "ops": n,
        "p50": us[n // 2],
        "p99": us[min(n - 1, (n * 99) // 100)],
    }


SIZE = 64


def _pipe_producer(conn, rx_end, n):
    arm_deadline()
    rx_end.close()
    msg = bytearray(b"\xa5" * SIZE)
    for seq in range(n + 1):
        msg[0] = msg[-1] = seq & 0xFF
        conn.send_bytes(msg)


def pipe(quick):
    n = 3_000 if quick else 50_000
    # Duplex, so a socket pair, as shmsync::pipe() is.
    rx, tx = CTX.Pipe()
    child = CTX.Process(target=_pipe_producer, args=(tx, rx, n), daemon=True)
    child.start()
    tx.close()
    try:
        # The untimed message 0 gets both sides up.
        if not rx.poll(WAIT):
            raise RuntimeError(f"no message within {WAIT} s")
        first = rx.recv_bytes()
        if len(first) != SIZE or first[0] != 0:
            raise RuntimeError("message 0 is wrong")
        t0 = time.perf_counter_ns()
        for seq in range(1, n + 1):
            m = rx.recv_bytes()
            if len(m) != SIZE or m[0] != seq & 0xFF or m[-1] != seq & 0xFF:
                raise RuntimeError(f"message {seq}: wrong length or content (lost, reordered or corrupted)")
        ns = time.perf_counter_ns() - t0
        child.join(WAIT)
        if child.exitcode != 0:
            raise RuntimeError(f"the pipe producer exited with {child.exitcode}")
        # The producer has exited, so the pipe must now be at end of file.
        try:
            rx.recv_bytes()
            raise RuntimeError("messages left in the pipe")
        except EOFError:
            pass
    finally:
        if child.is_alive():
            child.kill()
            child.join(WAIT)
    return {"unit": "msg/s", "value": n / (ns / 1e9), "ops": n}


MEASUREMENTS = {"lock": lock, "event": event, "pipe": pipe}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in MEASUREMENTS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(MEASUREMENTS)}}} [quick]")
    arm_deadline()
    name = sys.argv[1]
    quick = len(sys.argv) > 2 and sys.argv[2] == "quick"
    result = MEASUREMENTS[name](quick)
    result["measurement"] = name
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
