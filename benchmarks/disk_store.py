"""The disk miss (issue 17): ``Memoized`` on ``DiskBackend`` next to diskcache, step by step.

Run by hand from the repository root (about 40 s; not part of CI)::

    .venv/bin/python benchmarks/disk_store.py [--seconds 20] [--size 200]

Every row stores a new key per call into its own directory (all on one filesystem, under the
home directory, not a tmpfs), with the same ``size_limit`` and ``timeout``:

- ``diskcache_set``: one ``diskcache.Cache.set`` of an entry of expcache's size: the floor,
  the one durable write (an SQLite transaction) a miss needs;
- ``xc_miss_lease`` / ``xc_miss_nolease``: a whole ``Memoized`` miss of a trivial function,
  ``time_threshold=0``, with the stampede lease (a byte-range ``lockf`` on a file beside the
  cache) and without: get (a miss) + lock + run + envelope + set + unlock;
- ``diskcache_memoize_miss``: the peer, ``Cache.memoize()``'s miss (get + run + set);
- the steps of the miss, each alone and warm (``timeit``-style blocks): ``DiskBackend.set``,
  ``DiskBackend.get`` of an absent key, the key, the entry's metadata with the per-argument
  digests ``explain()`` reads, the envelope, the file lease's acquire + done, and the pieces
  of that lease (the lock file's path and table, ``lockf`` lock + unlock, one
  ``threading.Event`` made and set).
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import os
import random
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

import diskcache

from _measure import Case, run_interleaved, summarize
from cases import miss_fn
from expcache import DiskBackend, Memoized
from expcache.entries import ValueEntry
from expcache.filelease import _table, lock_file_name

__all__ = ["main"]


def steps(ns: dict[str, Any], seconds: float) -> dict[str, float]:
    """Median µs per call of each warm step, interleaved in blocks of 20."""
    stmts = {
        "DiskBackend.set (new key)": "disk.set(f'ex3:000000000001:{next(ks):032x}', sample)",
        "diskcache Cache.set (new key)": "raw.set(f'ex3:000000000002:{next(ks):032x}', sample)",
        "DiskBackend.get of an absent key": "disk.get(f'ex3:000000000003:{next(ks):032x}')",
        "key (KeyMaker)": "core.keys((next(ks),), {})",
        "metadata with per-argument digests (call_meta)": "core.call_meta(0.1, (5,), {})",
        "envelope (Serde.dumps)": "core.serde.dumps(key, ValueEntry(5, core.meta(0.1)))",
        "file lease: acquire + done (lockf lock + unlock)":
            "lease = core.new_lease(f'ex3:000000000004:{next(ks):032x}', None)\n"
            "lease.acquire()\nlease.done(True)",
        "  its lock-file path and table (Path join, dict)":
            "_table(directory / lock_file_name)",
        "  lockf lock + unlock of one byte": "lockf(fd, LOCK, 1, 77)\nlockf(fd, UNLOCK, 1, 77)",
        "  threading.Event() + set()": "Event().set()",
    }  # fmt: skip
    timers = {name: timeit.Timer(stmt, globals=ns) for name, stmt in stmts.items()}
    samples: dict[str, list[float]] = {name: [] for name in timers}
    order = list(timers)
    rng = random.Random(0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rng.shuffle(order)
        for name in order:
            samples[name].append(timers[name].timeit(20) / 20 * 1e6)
    return {name: sorted(v)[len(v) // 2] for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        root = Path(tmp)
        disk = DiskBackend(root / "backend", size_limit=2**30, timeout=60)
        lease_on = Memoized(miss_fn, disk, time_threshold=0, lease=True)
        lease_off = Memoized(miss_fn, disk, time_threshold=0, lease=False, namespace="nolease")
        fresh = itertools.count(10**9)
        lease_on(next(fresh))
        lease_off(next(fresh))
        sample = disk.get(lease_on.cache_key(10**9))
        assert sample is not None
        raw = diskcache.Cache(str(root / "raw"), size_limit=2**30, timeout=60)
        peer = diskcache.Cache(str(root / "peer"), size_limit=2**30, timeout=60)
        peer_miss = peer.memoize(name="miss")(miss_fn)
        keys = itertools.count()
        cases = [
            Case("diskcache_set", "diskcache Cache.set of expcache's miss entry (the floor)",
                 lambda: raw.set(f"ex3:000000000000:{next(keys):032x}", sample)),
            Case("xc_miss_lease", "Memoized miss, disk, lease on (get, lockf, run, set, unlock)",
                 lambda: lease_on(next(fresh)), reference="diskcache_set"),
            Case("xc_miss_nolease", "Memoized miss, disk, lease off (get, run, set)",
                 lambda: lease_off(next(fresh)), reference="diskcache_set"),
            Case("diskcache_memoize_miss", "diskcache Cache.memoize miss (get, run, set)",
                 lambda: peer_miss(next(fresh)), reference="diskcache_set"),
        ]  # fmt: skip
        rounds = run_interleaved(cases, seconds=args.seconds)
        medians = {c.name: summarize(c).median_us for c in cases}
        print(f"\n{rounds} rounds, {len(sample)}-byte entries, directories under {tmp}\n")
        print("| row | what | median µs | p90 µs | x diskcache set | x diskcache memoize miss |")
        print("|---|---|---:|---:|---:|---:|")
        for case in cases:
            s = summarize(case)
            print(
                f"| {case.name} | {case.what} | {s.median_us:.1f} | {s.p90_us:.1f} | "
                f"{s.median_us / medians['diskcache_set']:.2f} | "
                f"{s.median_us / medians['diskcache_memoize_miss']:.2f} |"
            )
        core = lease_on._core
        lock_path = root / "scratch.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        ns = {
            "disk": disk, "raw": raw, "sample": sample, "ks": keys, "core": core,
            "key": lease_on.cache_key(5), "ValueEntry": ValueEntry, "_table": _table,
            "directory": disk.directory, "lock_file_name": lock_file_name,
            "lockf": fcntl.lockf, "fd": fd, "LOCK": fcntl.LOCK_EX | fcntl.LOCK_NB,
            "UNLOCK": fcntl.LOCK_UN, "Event": threading.Event,
        }  # fmt: skip
        print("\n| step of the disk miss (warm, alone) | µs |\n|---|---:|")
        for name, us in steps(ns, args.seconds / 2).items():
            print(f"| {name} | {us:.2f} |")
        os.close(fd)
        disk.close()
        raw.close()
        peer.close()


if __name__ == "__main__":
    main()
