"""The disk miss's store: ``DiskBackend.set`` next to a raw ``diskcache.Cache.set``.

Run by hand from the repository root (about 15 s; not part of CI)::

    .venv/bin/python benchmarks/disk_store.py [--seconds 10] [--size 200]

Both store a new key of ``--size`` bytes per call into their own fresh directory on the same
filesystem (a temporary directory), with the same ``size_limit`` and ``timeout``: one SQLite
transaction each. The ratio is what the backend layer (size check, error mapping) adds to
the one durable write of a miss; the lease side of the miss (issue 17) is the lease module's.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import diskcache

from _measure import Case, run_interleaved, summarize
from expcache.backends import DiskBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    value = b"v" * args.size
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        backend = DiskBackend(Path(tmp) / "backend", size_limit=2**30, timeout=60)
        raw = diskcache.Cache(str(Path(tmp) / "raw"), size_limit=2**30, timeout=60)
        mine, theirs = itertools.count(), itertools.count()
        cases = [
            Case("disk_set", "DiskBackend.set (new key)",
                 lambda: backend.set(f"ex3:000000000000:{next(mine):032x}", value),
                 reference="diskcache_set"),
            Case("diskcache_set", "diskcache.Cache.set (new key)",
                 lambda: raw.set(f"ex3:000000000000:{next(theirs):032x}", value)),
        ]  # fmt: skip
        rounds = run_interleaved(cases, seconds=args.seconds)
        print(f"\n{rounds} rounds, {args.size}-byte values, directory under {tmp}\n")
        print("| row | what | median us | p90 us | vs diskcache |")
        print("|---|---|---|---|---|")
        base = summarize(cases[1]).median_us
        for case in cases:
            s = summarize(case)
            print(
                f"| {case.name} | {case.what} | {s.median_us:.1f} | {s.p90_us:.1f} |"
                f" {s.median_us / base:.2f}x |"
            )
        backend.close()
        raw.close()


if __name__ == "__main__":
    main()
