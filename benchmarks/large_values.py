"""Large-value hits: ``MemcachedBackend.get`` of 1 / 10 / 50 MB next to raw pymemcache.

Run by hand from the repository root (about 40 s; not part of CI)::

    .venv/bin/python benchmarks/large_values.py [--pin none|same|split] [--seconds 10]

A private memcached (default ``-I 1m``: 10 and 50 MB are chunked, 1 MB = 10**6 bytes fits
one item) on a free loopback port. Rows, interleaved (see ``_measure``), for each size:

- ``xc_get``: ``backend.get(key)``, the whole hit: manifest, every chunk received straight
  into one preallocated ``bytearray``, one xxh3-128 digest over it;
- ``raw_get_many``: pymemcache ``get_many`` of the same chunk keys: the transfer alone, each
  chunk its own ``bytes``, nothing assembled or verified (the floor);
- ``raw_join``: the same plus ``b"".join`` and the digest, i.e. what assembling on top of
  pymemcache costs (the pre-redesign path, minus its extra slice copies).

Throughput is size / median call time. The issue's target: a whole 10 MB hit >= 1 GB/s.
"""

from __future__ import annotations

import argparse
import os

import xxhash
from pymemcache.client.base import Client

from _measure import Case, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm
from expcache.backends import MemcachedBackend
from expcache.backends.memcached import _CHUNK_MAGIC, _MANIFEST

SIZES_MB = (1, 10, 50)
PLACEMENTS = {"none": (None, None), "same": ({0}, {0}), "split": ({0}, {1})}


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
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    exit_on_sigterm()
    client_cpus, server_cpus = PLACEMENTS[args.pin]
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    with MemcachedProcess(cpus=server_cpus, memory_mb=512) as server:
        backend = MemcachedBackend([server.address], timeout=5.0)
        raw = Client(("127.0.0.1", server.port), no_delay=True)
        cases: list[Case] = []
        for mb in SIZES_MB:
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
