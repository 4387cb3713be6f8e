"""Where a small memcached hit's CPU time goes: each step timed warm and in place.

Run from the repository root (about 60 s per placement; not part of CI)::

    .venv/bin/python benchmarks/profile_hits.py [--pin same|split|none|both] [--seconds 25]

A hit is, in order: the dispatch (``Memoized.__call__`` -> ``Core.call``), the key
(``KeyMaker.__call__``), the breaker check, ``MemcachedBackend.get`` (its Python around one
``sendall`` + ``recv``), the envelope check and decode (``Serde.hit``) and the counters
(``Recorder.hit``). Each step is timed two ways, on the very objects of the hit:

- **warm**: the step alone in a tight loop (``timeit``-style: the statement compiled into the
  loop, no call overhead of the harness), i.e. with hot caches and branch predictors;
- **in place**: the step right after a bare socket round trip -- ``rt(); step`` minus
  ``rt()`` alone, medians of interleaved blocks -- which is how it runs inside a hit: the
  kernel and memcached (on the same vCPU, or waking the other one) have just evicted much of
  what the step needs from the caches, so the same Python costs more.

``get``'s Python part cannot run warm against a real socket, so its warm figure comes from
the same backend over a stub socket that answers the recorded reply at once (everything of
``get`` except the two system calls); in place it is ``backend.get`` minus the bare round
trip. The bare round trip (``rt``) is one ``sendall`` and one ``recv`` of expcache's own
request on a blocking ``TCP_NODELAY`` socket without a Python timeout: the floor no client can
go below. Steps run interleaved round-robin in shuffled order, like ``run.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import socket
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

from pymemcache.client.base import Client

from _server import MemcachedProcess, exit_on_sigterm
from cases import SMALL_ARGS, small_fn
from expcache import MemcachedBackend, Memoized, MemoryBackend
from expcache.backends import _wire
from expcache.backends._deadline import DeadlineSocket

__all__ = ["main"]


class StubSocket:
    """Answers every request with one recorded reply at once: ``get`` minus the round trip.

    ``_wire`` writes requests to the descriptor of a plain socket; this one's descriptor is
    ``/dev/null`` (a cheap system call, kept: the real path makes it too). ``_wire`` takes a
    socket for plain when its type *is* ``_wire._PLAIN``: a statement on the stub swaps that
    to this class and back around itself (``STUB``), and the swap's own cost, timed alone,
    is subtracted, so the stub runs the real hit path and real sockets keep theirs.
    """

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.timeout: float | None = None
        self.fd = os.open(os.devnull, os.O_WRONLY)

    def fileno(self) -> int:
        return self.fd

    def sendall(self, data: Any) -> None:
        pass

    def send(self, data: Any) -> int:
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.reply

    def settimeout(self, value: float | None) -> None:
        self.timeout = value

    def gettimeout(self) -> float | None:
        return self.timeout

    def close(self) -> None:
        pass


def _bare_round_trip(address: str, key: str) -> Callable[[], bytes]:
    """One ``sendall`` + one ``recv`` on a blocking socket: the floor of any client."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    request = b"get " + key.encode() + b"\r\n"
    sendall, recv = sock.sendall, sock.recv

    def rt() -> bytes:
        sendall(request)
        return recv(65536)

    reply = rt()
    assert reply.endswith(b"END\r\n") and reply.startswith(b"VALUE"), reply[:40]
    return rt


def _stub_backend(reply: bytes, timeout: float) -> MemcachedBackend:
    """A backend whose thread-local connection is a DeadlineSocket over a StubSocket."""
    stub = MemcachedBackend("127.0.0.1:1", timeout=timeout)
    client, deadline = stub._conn()
    client.sock = DeadlineSocket(StubSocket(reply), deadline)  # type: ignore[arg-type]
    return stub


WRITE = "get: os.write of the request to /dev/null (subtracted from the stub rows)"
# a statement on the stub runs between these (see StubSocket); SWAP alone is their cost
STUB = "_w._PLAIN = Stub\n{}\n_w._PLAIN = Plain"
SWAP = STUB.format("pass")


class Step:
    """One statement, compiled into a timing loop (no per-call harness overhead)."""

    def __init__(self, name: str, stmt: str, ns: dict[str, Any], block: int) -> None:
        self.name = name
        self.stmt = stmt
        self.timer = timeit.Timer(stmt, globals=ns)
        self.block = block
        self.samples: list[float] = []

    def run(self) -> None:
        self.samples.append(self.timer.timeit(self.block) * 1e9 / self.block)

    @property
    def median_us(self) -> float:
        values = sorted(self.samples)
        return values[len(values) // 2] / 1e3


# (label, warm statement, in-place statement): in place, a statement runs after rt() and rt()
# alone is subtracted; one marked "RT " makes its own round trip, so it runs alone (and rt()
# is subtracted from it). The hit's own steps, in the order Core.call runs them.
STEPS: list[tuple[str, str, str | None]] = [
    ("dispatch: Memoized.__call__ -> Core.call (two frames, the args tuple)",
     "noop_memo(*A)", "noop_memo(*A)"),
    ("key: KeyMaker.__call__ (bind, encode 3 args, join, xxh3-128, prefix)",
     "keys(A, KW)", "keys(A, KW)"),
    ("breaker check (healthy: two attribute reads)",
     "b._failures >= b.threshold and not b.allow()\nb._failures or g.down",
     "b._failures >= b.threshold and not b.allow()\nb._failures or g.down"),
    ("get: MemcachedBackend.get, its Python part", STUB.format("stub.get(key)"),
     "RT mc.get(key)"),
    ("envelope verify + decode: Serde.hit", "hit(key, data)", "hit(key, data)"),
    ("stats: Recorder.hit (lock, two fields)", "rec_hit(0.0)", "rec_hit(0.0)"),
]
# Pieces of the steps above (warm only): where a step's own time goes.
DETAIL: list[tuple[str, str]] = [
    ("get: thread-local connection lookup", "mc._local.conn"),
    ("get: Deadline.start()", "deadline.start()"),
    ("get: _read_limit property", "mc._read_limit"),
    ("get: _wire.token(key) (key check + encode)", "token(key)"),
    ("get: DeadlineSocket._arm (the deadline check before a socket call)", "dsock._arm()"),
    (WRITE, "write(fd, request)"),
    ("get: _wire.get on the stub (no backend layer)",
     STUB.format("wire_get(client, key, limit)")),
    ("get: chunk check value[:8] == magic", "data[:8] == magic"),
    ("verify: xxh3-128 of the key (header's key digest)", "xxh(key.encode())"),
    ("verify: xxh3-128 of header + body (the trailer)", "xxh(data[:end])"),
    ("decode: the float payload (struct unpack_from)", "f64(data, hend)[0]"),
    ("stats: threading.Lock acquire + release", "with lock: pass"),
    ("a Python call of a trivial function (for scale)", "noop(A, KW)"),
]
WHOLE: list[tuple[str, str, str | None]] = [
    ("whole hit: Memoized over memcached", STUB.format("memo_stub(*A)"), "RT memo(*A)"),
    ("whole hit: Memoized over MemoryBackend (no I/O)", "memo_mem(*A)", None),
    ("raw pymemcache get (its Python + a timeout's poll()s)", "", "RT raw.get(key)"),
    ("bare round trip with a Python socket timeout (+ 2 poll())", "", "RT rt_timeout()"),
]


def build(address: str) -> dict[str, Any]:
    mc = MemcachedBackend(address)
    memo = Memoized(small_fn, mc, time_threshold=0)
    memo(*SMALL_ARGS)
    key = memo.cache_key(*SMALL_ARGS)
    data = mc.get(key)
    assert data is not None and memo(*SMALL_ARGS) == small_fn(*SMALL_ARGS)
    rt = _bare_round_trip(address, key)
    reply = rt()
    stub = _stub_backend(reply, mc.timeout)
    assert stub.get(key) == data
    memo_stub = Memoized(small_fn, stub, time_threshold=0)
    before = memo_stub.stats.hits
    memo_stub(*SMALL_ARGS)
    assert memo_stub.stats.hits == before + 1, "the stub-socket hit is not a hit"
    memo_mem = Memoized(small_fn, MemoryBackend(), time_threshold=0)
    memo_mem(*SMALL_ARGS)
    noop_memo = memo.replace()
    noop_memo.__dict__["_call"] = lambda args, kwargs: None

    def rt_timeout_factory() -> Callable[[], bytes]:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(mc.timeout)
        request = b"get " + key.encode() + b"\r\n"

        def rt_timeout() -> bytes:
            sock.sendall(request)
            return sock.recv(65536)

        return rt_timeout

    host, _, port = address.rpartition(":")
    core = memo._core
    _, deadline = mc._conn()
    sclient, _ = stub._conn()
    small = core.serde.hit(key, data)
    assert small is not None and type(small[0]) is float, "the small hit's value is a float"
    hend = small[3]
    end = hend + 8
    import struct
    import threading

    import xxhash

    def noop(args: Any, kwargs: Any) -> None:
        return None

    return {
        "A": SMALL_ARGS, "KW": {}, "memo": memo, "memo_stub": memo_stub, "memo_mem": memo_mem,
        "noop_memo": noop_memo, "keys": core.keys, "b": core.breaker, "g": core.guard,
        "stub": stub, "mc": mc, "key": key, "data": data, "hit": core.serde.hit,
        "rec_hit": core.rec.hit, "rt": rt, "rt_timeout": rt_timeout_factory(),
        "raw": Client((host, int(port)), no_delay=True), "deadline": deadline,
        "token": _wire.token, "dsock": sclient.sock, "wire_get": _wire.get,
        "client": sclient, "limit": stub._read_limit, "magic": b"XCCHUNK1",
        "xxh": xxhash.xxh3_128_digest, "end": end, "hend": hend, "f64": struct.Struct("<d").unpack_from,
        "lock": threading.Lock(), "noop": noop, "write": os.write,
        "request": b"get " + key.encode() + b"\r\n", "_w": _wire, "Stub": StubSocket,
        "fd": sclient.sock._sock.fd,
        "Plain": socket.socket,
    }


def measure(ns: dict[str, Any], seconds: float) -> dict[str, dict[str, float]]:
    """{label: {"warm": us, "in place": us}} for the steps, details and whole-hit rows."""
    warm_block, place_block = 200, 20
    timers: dict[tuple[str, str], Step] = {}
    timers[("rt", "rt")] = Step("rt", "rt()", ns, place_block)
    for label, warm, place in STEPS + WHOLE:
        if warm:
            timers[(label, "warm")] = Step(label, warm, ns, warm_block)
        if place:  # "RT stmt": the statement makes its own round trip
            stmt = place[3:] if place.startswith("RT ") else f"rt()\n{place}"
            timers[(label, "in place")] = Step(label, stmt, ns, place_block)
    for label, warm in DETAIL:
        timers[(label, "warm")] = Step(label, warm, ns, warm_block)
    timers[("swap", "warm")] = Step("swap", SWAP, ns, warm_block)
    order = list(timers.values())
    for t in order:  # warm up: connections, lazily built state, first-call paths
        t.timer.timeit(5)
    rng = random.Random(0)
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < 5 or time.monotonic() < deadline:
        rng.shuffle(order)
        for t in order:
            t.run()
        gc.collect(1)
        rounds += 1
    rt = timers[("rt", "rt")].median_us
    # a stub statement also pays the swap and its one write(2) to /dev/null: the real path's
    # write is part of its round trip (rt makes one too), so the warm figure excludes both
    swap = timers[("swap", "warm")].median_us + timers[(WRITE, "warm")].median_us
    out: dict[str, dict[str, float]] = {"rt": {"in place": rt}}
    for (label, how), t in timers.items():
        if label in ("rt", "swap"):
            continue
        value = t.median_us - rt if how == "in place" else t.median_us
        if how == "warm" and "_w._PLAIN" in t.stmt:
            value -= swap
        out.setdefault(label, {})[how] = value
    out["_rounds"] = {"n": float(rounds)}
    return out


def render(pin: str, results: dict[str, dict[str, float]]) -> str:
    rt = results["rt"]["in place"]
    lines = [
        f"### pin = {pin} ({int(results['_rounds']['n'])} rounds; bare round trip "
        f"{rt:.2f} µs)",
        "",
        "| step of a small memcached hit | warm µs | in place µs |",
        "|---|---:|---:|",
    ]

    def cell(label: str, how: str) -> str:
        value = results.get(label, {}).get(how)
        return "-" if value is None else f"{value:.2f}"

    warm_sum = place_sum = 0.0
    for label, _, _ in STEPS:
        warm_sum += results[label].get("warm", 0.0)
        place_sum += results[label].get("in place", 0.0)
        lines.append(f"| {label} | {cell(label, 'warm')} | {cell(label, 'in place')} |")
    lines.append(f"| **sum of the steps** | **{warm_sum:.2f}** | **{place_sum:.2f}** |")
    for label, _, _ in WHOLE:
        lines.append(f"| {label} | {cell(label, 'warm')} | {cell(label, 'in place')} |")
    whole = results[WHOLE[0][0]]
    lines += [
        f"| glue of Core.call (whole hit minus the steps) | "
        f"{whole['warm'] - warm_sum:.2f} | {whole['in place'] - place_sum:.2f} |",
        "",
        "In place = (round trip + step) minus the round trip alone; the whole-hit row in place is "
        "expcache's own CPU time above the socket round trip.",
        "",
        "| piece (warm) | µs |",
        "|---|---:|",
    ]
    for label, _ in DETAIL:
        lines.append(f"| {label} | {cell(label, 'warm')} |")
    return "\n".join(lines)


PLACEMENTS = {"same": ({0}, {0}), "split": ({0}, {1}), "none": (None, None)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", choices=[*PLACEMENTS, "both"], default="both")
    parser.add_argument("--seconds", type=float, default=25.0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    all_cpus = set(os.sched_getaffinity(0))
    pins = ["same", "split"] if args.pin == "both" else [args.pin]
    for pin in pins:
        client_cpus, server_cpus = PLACEMENTS[pin]
        os.sched_setaffinity(0, client_cpus if client_cpus is not None else all_cpus)
        with tempfile.TemporaryDirectory(prefix="expcache-prof-"), \
                MemcachedProcess(cpus=server_cpus) as server:
            ns = build(server.address)
            results = measure(ns, args.seconds)
        os.sched_setaffinity(0, all_cpus)
        print(render(pin, results), flush=True)
        print()


if __name__ == "__main__":
    main()
