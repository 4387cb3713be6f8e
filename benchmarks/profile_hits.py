"""Where a cache hit's time goes: each step of the hit paths timed on its own, interleaved.

Run from the repository root (about 20 s)::

    .venv/bin/python benchmarks/profile_hits.py [--pin same|split|none] [--cprofile]

Every step below is a piece of what ``Memoized.__call__`` / ``Memoized.map`` / the backends do
on a hit, called directly on the same objects, so the table reads as a budget: the floor, then
what each layer adds. Steps are timed in blocks of calls (``perf_counter_ns`` around the block,
divided by its length) and interleaved round-robin like ``run.py``. ``--cprofile`` adds the
deterministic profile of the same hits (its own overhead inflates small functions: read it for
the call graph, the step table for the figures).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import os
import pickle
import pstats
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import xxhash
from pymemcache.client.base import Client

from _server import MemcachedProcess, exit_on_sigterm
from cases import ARRAY_SIZE, BATCH, SMALL_ARGS, array_fn, small_fn
from expcache import DiskBackend, MemcachedBackend, Memoized
from expcache.backends.memcached import _mapped

Step = tuple[str, Callable[[], Any], int]


def _minimal_get(address: str, key: str) -> Callable[[], bytes | None]:
    """The wire alone: one ``get`` over a bare TCP_NODELAY socket, parsed minimally."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = b"get " + key.encode() + b"\r\n"

    def get() -> bytes | None:
        sock.sendall(request)
        buf = sock.recv(65536)
        while not buf.endswith(b"END\r\n"):
            buf += sock.recv(65536)
        if not buf.startswith(b"VALUE"):
            return None
        nl = buf.index(b"\r\n")
        size = int(buf[:nl].rsplit(b" ", 1)[1])
        return buf[nl + 2 : nl + 2 + size]

    return get


def _locked(lock: threading.Lock) -> None:
    with lock:
        pass


def build(address: str, tmp: Path) -> dict[str, list[Step]]:
    mc = MemcachedBackend(address)
    host, _, port = address.rpartition(":")
    raw = Client((host, int(port)), no_delay=True)
    raw_timeout = Client((host, int(port)), no_delay=True, timeout=mc.timeout,
                         connect_timeout=mc.connect_timeout)
    array = np.random.default_rng(0).random(ARRAY_SIZE)
    buffer = array.data  # the same bytes keys.py hashes

    hit = Memoized(small_fn, mc, time_threshold=0)
    hit(*SMALL_ARGS)
    key = hit.cache_key(*SMALL_ARGS)
    data = mc.get(key)
    assert data is not None
    body = data[20:]
    inner = mc.client
    keymaker = hit._keys
    serde = hit.serde
    lock = threading.Lock()
    breaker = mc.breaker
    wire = _minimal_get(address, key)
    assert wire() == data

    def mapped_only() -> None:
        with _mapped("x"):
            pass

    def bookkeeping() -> None:  # what __call__ does around get/decode on a hit
        breaker.allow()
        with hit._lock:
            hit.stats.hits += 1
            hit.stats.saved_seconds += 0.0

    hit_steps: list[Step] = [
        ("wire: bare-socket get (no client library)", wire, 20),
        ("raw pymemcache get (no_delay, no timeout): the floor", lambda: raw.get(key), 20),
        ("raw pymemcache get with expcache's timeout=0.5", lambda: raw_timeout.get(key), 20),
        ("backend.client.get (expcache's pymemcache Client)", lambda: inner.get(key), 20),
        ("backend.get (+ _mapped, client property, chunk check)", lambda: mc.get(key), 20),
        ("Memoized hit (all of it)", lambda: hit(*SMALL_ARGS), 20),
        ("  key: KeyMaker(args, kwargs)", lambda: keymaker(SMALL_ARGS, {}), 200),
        ("  decode: serde.loads + layout check", lambda: hit._decode(key, data), 200),
        ("    serde: blake2b of the key (envelope check)",
         lambda: __import__("hashlib").blake2b(key.encode(), digest_size=16).digest(), 200),
        ("    serde: pickle.loads of the body", lambda: pickle.loads(body), 200),
        ("  _mapped() context manager alone", mapped_only, 200),
        ("  bookkeeping: breaker.allow, lock, stats", bookkeeping, 200),
        ("  threading.Lock acquire+release", lambda: _locked(lock), 200),
        ("  serde.loads alone", lambda: serde.loads(key, data), 200),
    ]

    hit_array = Memoized(array_fn, mc, time_threshold=0)
    hit_array(array)
    array_steps: list[Step] = [
        ("raw pymemcache get (floor)", lambda: raw.get(key), 20),
        ("Memoized hit, 1e5-float64 array arg", lambda: hit_array(array), 20),
        ("  key: KeyMaker((array,), {})", lambda: hit_array._keys((array,), {}), 20),
        ("  xxh3-128 of the array buffer", lambda: xxhash.xxh3_128_digest(buffer), 20),
        ("  xxh3-64 of the array buffer", lambda: xxhash.xxh3_64_digest(buffer), 20),
        ("  pickle.dumps of the array (what pickle-based keys pay first)",
         lambda: pickle.dumps(array, protocol=5), 5),
    ]

    batch = Memoized(small_fn, mc, time_threshold=0, namespace="batch")
    calls = [(i, 0.5, "abc") for i in range(BATCH)]
    batch.map(calls)
    bkeys = [batch.cache_key(*c) for c in calls]
    found = mc.get_many(bkeys)
    assert len(found) == BATCH
    bk = batch._keys
    map_steps: list[Step] = [
        ("raw pymemcache get_many(100) (floor)", lambda: raw.get_many(bkeys), 5),
        ("backend.get_many(100)", lambda: mc.get_many(bkeys), 5),
        ("Memoized.map over 100 hits (all of it)", lambda: batch.map(calls), 5),
        ("  100 keys: [KeyMaker(c, {}) for c in calls]",
         lambda: [bk(c, {}) for c in calls], 5),
        ("  100 decodes: [_decode(k, v) for k, v in found]",
         lambda: [batch._decode(k, v) for k, v in found.items()], 5),
        ("  normalise calls: [((), dict) or (tuple(c), {})]",
         lambda: [(tuple(c), {}) for c in calls], 5),
    ]

    disk = DiskBackend(tmp / "disk")
    hit_disk = Memoized(small_fn, disk, time_threshold=0)
    hit_disk(*SMALL_ARGS)
    dkey = hit_disk.cache_key(*SMALL_ARGS)
    ddata = disk.get(dkey)
    assert ddata is not None
    dcache = disk.cache
    peer = diskcache.Cache(str(tmp / "peer"))
    peer_fn = peer.memoize()(small_fn)
    peer_fn(*SMALL_ARGS)
    peer_key = peer_fn.__cache_key__(*SMALL_ARGS)
    disk_steps: list[Step] = [
        ("diskcache memoize hit (the peer)", lambda: peer_fn(*SMALL_ARGS), 20),
        ("  peer: Cache.get of its tuple key", lambda: peer.get(peer_key), 20),
        ("Memoized hit, disk backend", lambda: hit_disk(*SMALL_ARGS), 20),
        ("  DiskBackend.get", lambda: disk.get(dkey), 20),
        ("  Cache.get of expcache's str key", lambda: dcache.get(dkey), 20),
        ("  key: KeyMaker", lambda: hit_disk._keys(SMALL_ARGS, {}), 200),
        ("  decode", lambda: hit_disk._decode(dkey, ddata), 200),
    ]
    return {"hit, small args (memcached)": hit_steps, "hit, array arg (memcached)": array_steps,
            "batched lookup of 100 hits": map_steps, "disk hit vs diskcache memoize": disk_steps}


def measure(groups: dict[str, list[Step]], seconds: float) -> dict[str, list[tuple[str, float]]]:
    steps = [s for g in groups.values() for s in g]
    samples: dict[int, list[float]] = {i: [] for i in range(len(steps))}
    order = list(range(len(steps)))
    rng = random.Random(0)
    perf = time.perf_counter_ns
    for _, fn, _ in steps:  # warm up
        for _ in range(5):
            fn()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rng.shuffle(order)
        gc.disable()
        for i in order:
            _, fn, block = steps[i]
            t0 = perf()
            for _ in range(block):
                fn()
            samples[i].append((perf() - t0) / block)
        gc.enable()
    out: dict[str, list[tuple[str, float]]] = {}
    i = 0
    for title, group in groups.items():
        rows = []
        for name, _, _ in group:
            values = sorted(samples[i])
            rows.append((name, values[len(values) // 2] / 1e3))
            i += 1
        out[title] = rows
    return out


def profile(groups: dict[str, list[Step]], n: int = 3000) -> str:
    """cProfile of the full hit and the full map (sorted by own time)."""
    text = io.StringIO()
    for title, label in (("hit, small args (memcached)", "Memoized hit (all of it)"),
                         ("batched lookup of 100 hits", "Memoized.map over 100 hits (all of it)")):
        fn = next(f for name, f, _ in groups[title] if name == label)
        calls = n if "map" not in label else n // 50
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fn()
        prof.disable()
        text.write(f"\n#### cProfile: {label} x {calls}\n\n```\n")
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("tottime").print_stats(14)
        text.write("```\n")
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", choices=["same", "split", "none"], default="same")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus: set[int] | None = None
    if args.pin == "same":
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = {cpus[0]}
    elif args.pin == "split":
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = {cpus[-1]}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="expcache-prof-") as tmp, \
            MemcachedProcess(cpus=server_cpus) as server:
        groups = build(server.address, Path(tmp))
        results = measure(groups, args.seconds)
        print(f"## Hit-path budget (pin={args.pin}, medians of interleaved blocks, µs per call)")
        for title, rows in results.items():
            print(f"\n### {title}\n\n| step | µs |\n|---|---:|")
            for name, us in rows:
                print(f"| {name.replace('|', '/')} | {us:.2f} |")
        if args.cprofile:
            with contextlib.redirect_stderr(io.StringIO()):
                print(profile(groups))


if __name__ == "__main__":
    main()
