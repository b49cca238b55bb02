#!/usr/bin/env python3
"""Python's multiprocessing, measured for the ipc_cost study, beside shmsync.

Usage: python3 mp_bench.py MEASUREMENT ARGS...
       python3 mp_bench.py --serve

With --serve it reads one request per line from stdin, a JSON array
[MEASUREMENT, ARGS...], and answers each with one JSON line on stdout (or
{"error": traceback}), until end of input: the study keeps one server per
section, so the interpreter starts once. Measurements:

  uncontended KIND N           KIND = lock | rlock | semaphore: N acquire +
                               release pairs in one process; ns per pair
  handoff KIND CPU_I CPU_R N   KIND = event | semaphore | condition: N timed
                               round trips between two processes, each
                               pinned to the CPU given (-1: unpinned); us
  contended PROCS TOTAL        PROCS processes take one Lock TOTAL times
                               between them; Mops/s and fairness
  stream KIND SIZE N           KIND = queue | pipe: N messages of SIZE bytes
                               from one process to another; msg/s
  roundtrip KIND SIZE N        N timed round trips of a SIZE-byte message,
                               echoed back; us
  pool WORKERS CHUNK N         Pool(WORKERS).map of a trivial function over
                               N items with chunksize CHUNK; us per item

Each runs the protocol of the shmsync row it stands beside (the Rust side
passes the same counts) and prints one JSON object on stdout: "measurement",
"unit", "value", "ops", "p50"/"p99"/"p999" where each operation is timed,
the CPU time of every process involved inside its timed window
("cpu_user_ns"/"cpu_sys_ns" from getrusage, or "cpu_ns" where only a total
is known), "lifetime_ns" (the CPU time of the whole measurement, this
process and its reaped children, which bounds the windows), and "fairness"
for the contended lock.

Uses only the standard library and the fork start method, as shmsync forks.
Every wait is bounded: SIGALRM ends any process that overruns (the Rust
side also kills the whole process group after its own deadline), and waits
outside the timed loops take timeouts too. The timed loops call what a user
calls (a blocking `get`, `recv_bytes`), as the Rust side does. Any failed
check raises, so the exit status is non-zero.
"""

import json
import math
import os
import queue as queue_module
import resource
import signal
import sys
import time
import traceback
import multiprocessing as mp

# Seconds any one process may run before SIGALRM ends it.
DEADLINE = 80
# Seconds any one wait may take.
WAIT = 10.0
# Untimed round trips first, as the Rust side does.
WARM_TRIPS = 20

CTX = mp.get_context("fork")


def arm_deadline():
    # SIGALRM's default action terminates the process.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(DEADLINE)


def cpu_now():
    """This process's (user, system) CPU time so far, ns, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (int(ru.ru_utime * 1e9), int(ru.ru_stime * 1e9))


def cpu_since(start):
    now = cpu_now()
    return (now[0] - start[0], now[1] - start[1])


def pin(cpu):
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def percentiles(ns, scale):
    """p50, p99, p99.9 of ns by nearest rank, as the Rust side computes them."""
    ns = sorted(ns)
    n = len(ns)

    def at(p):
        k = min(max(math.ceil(p * n), 1), n)
        return ns[k - 1] * scale

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999)}


def with_cpu(result, *spans):
    result["cpu_user_ns"] = sum(s[0] for s in spans)
    result["cpu_sys_ns"] = sum(s[1] for s in spans)
    return result


def join(child):
    child.join(WAIT)
    if child.exitcode != 0:
        raise RuntimeError(f"the child {child.name} exited with {child.exitcode}")


def kill_if_alive(*children):
    for child in children:
        if child.is_alive():
            child.kill()
            child.join(WAIT)


# ---- uncontended ----------------------------------------------------------


def uncontended(kind, n):
    n = int(n)
    lk = {"lock": CTX.Lock, "rlock": CTX.RLock, "semaphore": lambda: CTX.Semaphore(1)}[kind]()
    acquire, release = lk.acquire, lk.release
    # One untimed pass, so the first-call costs are out of the timing.
    for _ in range(1000):
        acquire()
        release()
    c0 = cpu_now()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        acquire()
        release()
    ns = time.perf_counter_ns() - t0
    cpu = cpu_since(c0)
    if not acquire(False):
        raise RuntimeError(f"{kind} left held after the loop")
    release()
    return with_cpu({"unit": "ns/op", "value": ns / n, "ops": n}, cpu)


# ---- handoff --------------------------------------------------------------


class Handoff:
    """One mechanism's two sides, as in benches/common/handoff.rs."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "event":
            self.there, self.back = CTX.Event(), CTX.Event()
        elif kind == "semaphore":
            self.there, self.back = CTX.Semaphore(0), CTX.Semaphore(0)
        elif kind == "condition":
            self.cond = CTX.Condition()
            # Whose move it is: 1 the responder's, 2 the initiator's; only
            # touched under the condition's lock.
            self.turn = CTX.RawValue("i", 0)
        else:
            raise ValueError(f"unknown handoff kind {kind}")

    def ping(self):
        if self.kind == "event":
            self.there.set()
            if not self.back.wait(WAIT):
                raise RuntimeError("no reply")
            self.back.clear()
        elif self.kind == "semaphore":
            self.there.release()
            if not self.back.acquire(True, WAIT):
                raise RuntimeError("no reply")
        else:
            with self.cond:
                self.turn.value = 1
                self.cond.notify()
                if not self.cond.wait_for(lambda: self.turn.value == 2, WAIT):
                    raise RuntimeError("no reply")

    def pong(self):
        if self.kind == "event":
            if not self.there.wait(WAIT):
                raise RuntimeError("no request")
            self.there.clear()
            self.back.set()
        elif self.kind == "semaphore":
            if not self.there.acquire(True, WAIT):
                raise RuntimeError("no request")
            self.back.release()
        else:
            with self.cond:
                if not self.cond.wait_for(lambda: self.turn.value == 1, WAIT):
                    raise RuntimeError("no request")
                self.turn.value = 2
                self.cond.notify()


def _responder(h, cpu, rounds, cpu_out):
    arm_deadline()
    pin(cpu)
    for _ in range(WARM_TRIPS):
        h.pong()
    c0 = cpu_now()
    for _ in range(rounds - WARM_TRIPS):
        h.pong()
    cpu_out[0], cpu_out[1] = cpu_since(c0)


def handoff(kind, cpu_i, cpu_r, n):
    n, cpu_i, cpu_r = int(n), int(cpu_i), int(cpu_r)
    h = Handoff(kind)
    cpu_out = CTX.RawArray("q", 2)
    child = CTX.Process(target=_responder, args=(h, cpu_r, WARM_TRIPS + n, cpu_out), daemon=True)
    child.start()
    # The server outlives this measurement: it gets its CPUs back after.
    allowed = os.sched_getaffinity(0)
    try:
        pin(cpu_i)
        for _ in range(WARM_TRIPS):
            h.ping()
        times = []
        c0 = cpu_now()
        last = time.perf_counter_ns()
        for _ in range(n):
            h.ping()
            now = time.perf_counter_ns()
            times.append(now - last)
            last = now
        cpu = cpu_since(c0)
        join(child)
    finally:
        os.sched_setaffinity(0, allowed)
        kill_if_alive(child)
    if kind == "event" and (h.there.is_set() or h.back.is_set()):
        raise RuntimeError("an event is left set after the run")
    if kind == "semaphore" and (h.there.acquire(False) or h.back.acquire(False)):
        raise RuntimeError("a semaphore unit is left after the run")
    if kind == "condition" and h.turn.value != 2:
        raise RuntimeError(f"turn is {h.turn.value} after the run, expected 2")
    result = {"unit": "us/op", "value": sum(times) / n / 1e3, "ops": n}
    result.update(percentiles(times, 1e-3))
    return with_cpu(result, cpu, (cpu_out[0], cpu_out[1]))


# ---- contended ------------------------------------------------------------


def spin_until_set(flag):
    """Yields until flag.value is set, as the Rust workers spin on theirs."""
    deadline = time.monotonic() + WAIT
    while flag.value == 0:
        if time.monotonic() > deadline:
            raise SystemExit("no start")
        os.sched_yield()


def _contender(me, lock, counter, total, order, took, ends, cpus, ready, start, done, procs):
    arm_deadline()
    # Private notes of the counter values seen under the lock; appended after
    # unlocking, so the critical section gains only the comparison.
    mine = []
    note = mine.append
    with ready.get_lock():
        ready.value += 1
    spin_until_set(start)
    c0 = cpu_now()
    while True:
        lock.acquire()
        n = counter.value
        if n >= total:
            lock.release()
            break
        counter.value = n + 1
        lock.release()
        note(n)
    ends[me] = time.monotonic_ns()
    cpus[2 * me], cpus[2 * me + 1] = cpu_since(c0)
    took[me] = len(mine)
    # Copy the notes out once nobody is timed any more.
    with done.get_lock():
        done.value += 1
    deadline = time.monotonic() + WAIT
    while done.value < procs:
        if time.monotonic() > deadline:
            raise SystemExit("the others never finished")
        time.sleep(0.0002)
    for n in mine:
        order[n] = me


def contended(procs, total):
    procs, total = int(procs), int(total)
    lock = CTX.Lock()
    counter = CTX.RawValue("Q", 0)
    order = CTX.RawArray("B", [255] * total)
    took = CTX.RawArray("Q", procs)
    ends = CTX.RawArray("Q", procs)
    cpus = CTX.RawArray("q", 2 * procs)
    ready, start, done = CTX.Value("i", 0), CTX.RawValue("i", 0), CTX.Value("i", 0)
    children = [
        CTX.Process(
            target=_contender,
            args=(i, lock, counter, total, order, took, ends, cpus, ready, start, done, procs),
            daemon=True,
        )
        for i in range(procs)
    ]
    for c in children:
        c.start()
    try:
        # Every worker spins on the start flag before the clock starts.
        deadline = time.monotonic() + WAIT
        while ready.value < procs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {ready.value} of {procs} workers came up")
            time.sleep(0.0005)
        t0 = time.monotonic_ns()
        start.value = 1
        for c in children:
            join(c)
    finally:
        kill_if_alive(*children)
    if counter.value != total:
        raise RuntimeError(f"the counter is {counter.value}, expected {total}")
    if sum(took) != total:
        raise RuntimeError(f"the workers counted {list(took)}, not {total} in all")
    counts = [0] * procs
    longest = run = runs = 0
    prev = None
    for who in order:
        if who >= procs:
            raise RuntimeError("an acquisition has no holder")
        counts[who] += 1
        if who == prev:
            run += 1
        else:
            runs += 1
            run = 1
            prev = who
        longest = max(longest, run)
    if counts != list(took):
        raise RuntimeError(f"the holders' array counts {counts}, the workers {list(took)}")
    span = max(ends) - t0
    if span <= 0:
        raise RuntimeError("no end time")
    result = {
        "unit": "Mops/s",
        "value": total / (span / 1e9) / 1e6,
        "ops": total,
        "fairness": {
            "share_min": min(counts) / total,
            "share_max": max(counts) / total,
            "longest_run": longest,
            "mean_run": total / max(runs, 1),
        },
    }
    return with_cpu(result, *[(cpus[2 * i], cpus[2 * i + 1]) for i in range(procs)])


# ---- messages -------------------------------------------------------------


def stamp(buf, seq):
    """Marks a message: its first and last bytes and bytes 1..9 carry seq."""
    buf[0] = buf[-1] = seq & 0xFF
    buf[1:9] = seq.to_bytes(8, "little")


def check(msg, size, seq):
    if len(msg) != size or msg[0] != seq & 0xFF or msg[-1] != seq & 0xFF or msg[1:9] != seq.to_bytes(8, "little"):
        raise RuntimeError(f"message {seq}: wrong length or content (lost, reordered or corrupted)")


class Channel:
    """One direction of a message channel: a Queue, or a Pipe's two ends."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "queue":
            self.q = CTX.Queue()
        elif kind == "pipe":
            # Duplex, so a socket pair, as shmsync::pipe() is.
            self.rx, self.tx = CTX.Pipe()
        else:
            raise ValueError(f"unknown channel kind {kind}")

    def send(self, buf):
        if self.kind == "queue":
            # The feeder thread pickles later, so the message must not change
            # after put: a bytes copy, as a caller reusing a buffer would make.
            self.q.put(bytes(buf))
        else:
            self.tx.send_bytes(buf)

    def recv(self):
        # Blocking, as a user calls it; SIGALRM bounds the wait.
        if self.kind == "queue":
            return self.q.get()
        return self.rx.recv_bytes()

    def flush(self):
        """In the sender: waits until everything put has been written."""
        if self.kind == "queue":
            self.q.close()
            self.q.join_thread()

    def check_empty(self):
        if self.kind == "queue":
            try:
                self.q.get(True, 0.05)
            except queue_module.Empty:
                return
        elif not self.rx.poll(0):
            return
        raise RuntimeError("messages are left in the channel")


def _producer(ch, size, n, start, cpu_out):
    arm_deadline()
    buf = bytearray(b"\xa5" * size)
    stamp(buf, 0)
    ch.send(buf)
    if not start.wait(WAIT):
        raise SystemExit("no start")
    c0 = cpu_now()
    for seq in range(1, n + 1):
        stamp(buf, seq)
        ch.send(buf)
    ch.flush()
    cpu_out[0], cpu_out[1] = cpu_since(c0)


def stream(kind, size, n):
    size, n = int(size), int(n)
    ch = Channel(kind)
    start = CTX.Event()
    cpu_out = CTX.RawArray("q", 2)
    child = CTX.Process(target=_producer, args=(ch, size, n, start, cpu_out), daemon=True)
    child.start()
    try:
        # The untimed message 0 gets both sides up; the consumer's clock
        # then starts with the start signal, as on the Rust side.
        check(ch.recv(), size, 0)
        c0 = cpu_now()
        t0 = time.perf_counter_ns()
        start.set()
        for seq in range(1, n + 1):
            check(ch.recv(), size, seq)
        ns = time.perf_counter_ns() - t0
        cpu = cpu_since(c0)
        join(child)
        ch.check_empty()
    finally:
        kill_if_alive(child)
    return with_cpu({"unit": "msg/s", "value": n / (ns / 1e9), "ops": n}, cpu, (cpu_out[0], cpu_out[1]))


def _echo(there, back, size, rounds, cpu_out):
    arm_deadline()
    c0 = cpu_now()
    for seq in range(rounds):
        if seq == WARM_TRIPS:
            c0 = cpu_now()
        msg = there.recv()
        check(msg, size, seq)
        back.send(msg)
    back.flush()
    cpu_out[0], cpu_out[1] = cpu_since(c0)


def roundtrip(kind, size, n):
    size, n = int(size), int(n)
    there, back = Channel(kind), Channel(kind)
    cpu_out = CTX.RawArray("q", 2)
    child = CTX.Process(target=_echo, args=(there, back, size, WARM_TRIPS + n, cpu_out), daemon=True)
    child.start()
    buf = bytearray(b"\x5a" * size)
    try:
        times = []
        for seq in range(WARM_TRIPS + n):
            if seq == WARM_TRIPS:
                c0 = cpu_now()
                last = time.perf_counter_ns()
            stamp(buf, seq)
            there.send(buf)
            check(back.recv(), size, seq)
            if seq >= WARM_TRIPS:
                now = time.perf_counter_ns()
                times.append(now - last)
                last = now
        cpu = cpu_since(c0)
        join(child)
        there.check_empty()
        back.check_empty()
        # No feeder thread may outlive the measurement in a server that
        # forks the next one.
        there.flush()
    finally:
        kill_if_alive(child)
    result = {"unit": "us/op", "value": sum(times) / n / 1e3, "ops": n}
    result.update(percentiles(times, 1e-3))
    return with_cpu(result, cpu, (cpu_out[0], cpu_out[1]))


# ---- pool -----------------------------------------------------------------


def double(x):
    return x * 2


def on_cpu_ns(pid):
    """A process's CPU time so far, ns: the first field of /proc/PID/schedstat
    (the scheduler's sum_exec_runtime, the counter behind its CPU clock)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def pool(workers, chunk, n):
    workers, chunk, n = int(workers), int(chunk), int(n)
    with CTX.Pool(workers) as p:
        # Untimed: the workers are up and have run a task each.
        if p.map(double, range(4 * workers), 1) != [double(x) for x in range(4 * workers)]:
            raise RuntimeError("the warm-up map is wrong")
        # The pool's worker processes (a private attribute, stable since 2.6).
        pids = [w.pid for w in p._pool]
        if len(pids) != workers:
            raise RuntimeError(f"{len(pids)} workers, expected {workers}")
        w0 = sum(on_cpu_ns(pid) for pid in pids)
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        out = p.map(double, range(n), chunk)
        ns = time.perf_counter_ns() - t0
        own = time.process_time_ns() - c0
        workers_cpu = sum(on_cpu_ns(pid) for pid in pids) - w0
        if [w.pid for w in p._pool] != pids:
            raise RuntimeError("a worker was replaced during the map")
        p.close()
        p.join()
    if out != [double(x) for x in range(n)]:
        raise RuntimeError("wrong results")
    return {"unit": "us/op", "value": ns / n / 1e3, "ops": n, "cpu_ns": own + workers_cpu}


def lifetime_now():
    """CPU time so far of this process and of every child it has reaped, ns."""
    total = 0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += int((ru.ru_utime + ru.ru_stime) * 1e9)
    return total


def measure(args):
    """Runs one measurement under its own deadline."""
    if not args or args[0] not in MEASUREMENTS:
        raise ValueError(f"unknown measurement {args!r}; the measurements are {', '.join(MEASUREMENTS)}")
    arm_deadline()
    l0 = lifetime_now()
    result = MEASUREMENTS[args[0]](*args[1:])
    result["lifetime_ns"] = lifetime_now() - l0
    signal.alarm(0)
    result["measurement"] = args[0]
    return result


def serve():
    for line in sys.stdin:
        try:
            result = measure(json.loads(line))
        except BaseException:  # SystemExit too: a failed check must not end the server
            signal.alarm(0)
            result = {"error": traceback.format_exc()}
        print(json.dumps(result), flush=True)


MEASUREMENTS = {
    "uncontended": uncontended,
    "handoff": handoff,
    "contended": contended,
    "stream": stream,
    "roundtrip": roundtrip,
    "pool": pool,
}


def main():
    if sys.argv[1:] == ["--serve"]:
        serve()
    elif len(sys.argv) >= 2 and sys.argv[1] in MEASUREMENTS:
        print(json.dumps(measure(sys.argv[1:])), flush=True)
    else:
        sys.exit(f"usage: {sys.argv[0]} {{--serve | {' | '.join(MEASUREMENTS)} ARGS...}}")


if __name__ == "__main__":
    main()
