"""Large-value hits: 1 / 10 / 50 MB through expcache next to raw pymemcache, interleaved.

Run by hand from the repository root (about 40 s per placement; not part of CI)::

    .venv/bin/python benchmarks/large_values.py [--pin none|same|split] [--seconds 15]

A private memcached (``-I 1m``: 10 and 50 MB are chunked; 1 MB = 10**6 bytes fits one item)
on a free loopback port. Rows, interleaved (see ``_measure``), for each size:

- ``xc_hit``: a whole ``Memoized`` hit whose value is a float64 array of that size: the key,
  ``MemcachedBackend.get`` (manifest, chunks received into one preallocated buffer, the
  chunks' xxh3-128 digest), the envelope's digest over the entry, and unpickling (protocol 5,
  the array's buffer out of band: a view of the received buffer, not copied again);
- ``xc_get``: ``backend.get(key)`` of those bytes alone (no envelope, no unpickle);
- ``raw_get_many``: pymemcache ``get_many`` of the same chunk keys: the transfer alone, each
  chunk its own ``bytes``, nothing assembled or verified (the floor);
- ``raw_join``: the floor plus ``b"".join`` and one digest, i.e. what assembling on top of
  pymemcache would cost.

- ``bare_recv``: the same chunks' ``get`` on a bare blocking socket, received with
  ``recv_into`` into one preallocated buffer and not parsed: what the loopback itself moves
  (memcached's copy out, the kernel's two copies), the floor of any client.

Throughput is size / median call time. The issue's target: a whole 10 MB hit >= 1 GB/s.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import numpy as np
import xxhash
from pymemcache.client.base import Client

from _measure import Case, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm
from expcache import Memoized
from expcache.backends import MemcachedBackend
from expcache.backends.memcached import _CHUNK_MAGIC, _MANIFEST

SIZES_MB = (1, 10, 50)
PLACEMENTS = {"none": (None, None), "same": ({0}, {0}), "split": ({0}, {1})}


def big_value(mb: int) -> np.ndarray[Any, Any]:
    """The memoized function: an incompressible float64 array of ``mb`` * 10**6 bytes."""
    return np.random.default_rng(mb).random(mb * 125_000)


def bare_reader(port: int, names: list[str]) -> Any:
    """One ``get`` of ``names`` on a bare socket, received whole into one buffer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = b"get " + " ".join(names).encode() + b"\r\n"
    sock.sendall(request)
    size = 0
    while True:  # learn the reply's size once
        part = sock.recv(1 << 20)
        size += len(part)
        if part.endswith(b"END\r\n"):
            break
    buffer = bytearray(size)
    view = memoryview(buffer)

    def read() -> int:
        sock.sendall(request)
        got = 0
        while got < size:
            got += sock.recv_into(view[got:])
        return got

    return read


def chunk_names(raw: Client, key: str) -> list[str]:
    """The keys holding the value: its chunks, or the key itself when it fits one item."""
    stored = raw.get(key)
    if stored[:8] != _CHUNK_MAGIC:
        return [key]
    count, _total, _digest, nonce = _MANIFEST.unpack(stored[8:])
    return [f"{key}:c{i}:{nonce.decode()}" for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", choices=sorted(PLACEMENTS), default="none")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    exit_on_sigterm()
    client_cpus, server_cpus = PLACEMENTS[args.pin]
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    with MemcachedProcess(cpus=server_cpus, memory_mb=512) as server:
        backend = MemcachedBackend([server.address], timeout=5.0)
        raw = Client(("127.0.0.1", server.port), no_delay=True)
        memo = Memoized(big_value, backend, time_threshold=0)
        cases: list[Case] = []
        for mb in SIZES_MB:
            expected = big_value(mb)
            memo(mb)
            before = memo.stats.hits
            assert np.array_equal(memo(mb), expected) and memo.stats.hits == before + 1
            stored = memo.cache_key(mb)
            stored_names = chunk_names(raw, stored)
            key = f"large:{mb}mb"
            value = os.urandom(mb * 10**6)
            backend.set(key, value)
            assert backend.get(key) == value
            names = chunk_names(raw, key)
            assert b"".join(raw.get_many(names)[n] for n in names) == value

            def raw_join(names: list[str] = names) -> bytes:
                parts = raw.get_many(names)
                whole = b"".join(parts[n] for n in names)
                xxhash.xxh3_128_digest(whole)
                return whole

            cases += [
                Case(f"xc_hit_{mb}mb", "Memoized hit, float64 array value (whole hit)",
                     lambda mb=mb: memo(mb), reference=f"raw_hit_chunks_{mb}mb"),
                Case(f"xc_hit_get_{mb}mb", "backend.get of that entry (no envelope, no unpickle)",
                     lambda stored=stored: backend.get(stored),
                     reference=f"raw_hit_chunks_{mb}mb"),
                Case(f"raw_hit_chunks_{mb}mb", "pymemcache get_many of that entry's chunks",
                     lambda names=stored_names: raw.get_many(names)),
                Case(f"bare_recv_{mb}mb", "bare socket get of those chunks into one buffer",
                     bare_reader(server.port, stored_names), reference=f"raw_hit_chunks_{mb}mb"),
                Case(f"xc_get_{mb}mb", "backend.get (one buffer, one digest)",
                     lambda key=key: backend.get(key), reference=f"raw_get_many_{mb}mb"),
                Case(f"raw_get_many_{mb}mb", "pymemcache get_many of the chunks (floor)",
                     lambda names=names: raw.get_many(names)),
                Case(f"raw_join_{mb}mb", "pymemcache get_many + join + digest",
                     raw_join, reference=f"raw_get_many_{mb}mb"),
            ]  # fmt: skip
        rounds = run_interleaved(cases, seconds=args.seconds, block_seconds=0.05, max_block=5)
        print(f"\npin={args.pin}, {rounds} rounds, memcached -I 1m, loopback\n")
        print("| row | what | median ms | p90 ms | GB/s (median) | vs floor |")
        print("|---|---|---|---|---|---|")
        medians = {c.name: summarize(c).median_us for c in cases}
        for case in cases:
            s = summarize(case)
            size = int(case.name.rsplit("_", 1)[1][:-2]) * 10**6
            ratio = f"{s.median_us / medians[case.reference]:.2f}x" if case.reference else "-"
            print(
                f"| {case.name} | {case.what} | {s.median_us / 1e3:.2f} | {s.p90_us / 1e3:.2f}"
                f" | {size / (s.median_us * 1e3):.2f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
