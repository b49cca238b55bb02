#!/usr/bin/env python3
"""Python's multiprocessing.connection, measured for the ipc_cost study
(the `connections` section): messages per second from a Client to a Listener.

Usage: python3 mp_connection.py FAMILY SIZE [quick]

FAMILY is `unix` (an abstract AF_UNIX name) or `tcp` (127.0.0.1, a free
port); SIZE is the payload in bytes. The listener and the client are made
with an authkey, as the shmsync rows are; the client is a forked child that
sends one untimed message, then the timed ones with send_bytes, and the
listener's side times from its first timed recv_bytes to the last. Every
message is checked (length, and first and last byte are the sequence
number), the count is exact, and every wait is bounded (Connection.poll
takes a timeout; SIGALRM ends an overrunning process; the Rust side kills
the whole process group after its own deadline). Prints one JSON object:
{"measurement", "unit", "value", "ops"}.
"""

import json
import os
import signal
import sys
import time
import multiprocessing as mp
from multiprocessing.connection import Client, Listener

DEADLINE = 60
WAIT = 10.0
AUTHKEY = b"bench"
CTX = mp.get_context("fork")


def arm_deadline():
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(DEADLINE)


def message(i, size):
    b = bytearray(size)
    b[0] = b[-1] = i % 256
    return bytes(b)


def producer(address, family, size, n):
    arm_deadline()
    conn = Client(address, family=family, authkey=AUTHKEY)
    for i in range(n + 1):
        conn.send_bytes(message(i, size))
    conn.close()


def main():
    family, size = sys.argv[1], int(sys.argv[2])
    quick = len(sys.argv) > 3 and sys.argv[3] == "quick"
    n = (2_000 if quick else 50_000) if size <= 64 else (1_000 if quick else 20_000)
    arm_deadline()
    if family == "unix":
        fam, address = "AF_UNIX", "\0shmsync-mp-bench-%d" % os.getpid()
    elif family == "tcp":
        fam, address = "AF_INET", ("127.0.0.1", 0)
    else:
        raise SystemExit("FAMILY is unix or tcp")
    with Listener(address, family=fam, authkey=AUTHKEY) as listener:
        child = CTX.Process(target=producer, args=(listener.address, fam, size, n))
        child.start()
        conn = listener.accept()
        for i in range(n + 1):
            if not conn.poll(WAIT):
                raise RuntimeError("message %d did not come within %ss" % (i, WAIT))
            m = conn.recv_bytes()
            if len(m) != size or m[0] != i % 256 or m[-1] != i % 256:
                raise RuntimeError("message %d is wrong" % i)
            if i == 0:
                t0 = time.perf_counter_ns()
        ns = time.perf_counter_ns() - t0
        child.join(WAIT)
        if child.exitcode != 0:
            raise RuntimeError("the client exited with %s" % child.exitcode)
    print(json.dumps({"measurement": "connection-" + family, "unit": "msg/s", "value": n / (ns / 1e9), "ops": n}))


if __name__ == "__main__":
    main()
