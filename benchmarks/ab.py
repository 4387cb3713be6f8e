"""Before/after of a hot-path change: two versions of expcache measured in one process.

Run from the repository root (about 30 s per placement; not part of CI)::

    .venv/bin/python benchmarks/ab.py --base HEAD~1 [--pin same|split|both] [--seconds 20]
        [--only hit_small,map_100]

``--base`` is any git revision: its ``src/expcache`` is exported (``git archive``) into a
temporary directory as the package ``expcache_base`` and imported next to the working tree's
``expcache``. Every row is built twice, once per version, over the same private memcached,
and all rows run interleaved (``_measure``): a change of a few hundred nanoseconds in a
25 µs hit is then visible, where two separate runs of ``run.py`` drift by more than that.
The core has no absolute imports of itself, so the exported copy is self-contained.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from _measure import Case, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm
from cases import ARRAY_SIZE, BATCH, SMALL_ARGS, array_fn, small_fn

ROOT = Path(__file__).resolve().parent.parent
PLACEMENTS = {"same": ({0}, {0}), "split": ({0}, {1}), "none": (None, None)}


def load_base(rev: str, into: Path) -> ModuleType:
    """``src/expcache`` at ``rev`` as the importable package ``expcache_base``."""
    blob = subprocess.run(
        ["git", "archive", "--format=tar", rev, "src/expcache"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "expcache").rename(into / "expcache_base")
    sys.path.insert(0, str(into))
    return importlib.import_module("expcache_base")


def rows(pkg: ModuleType, tag: str, address: str, tmp: Path) -> list[Case]:
    """The hot-path rows over one version of the package (each row one call)."""
    mc = pkg.MemcachedBackend(address)
    out: list[Case] = []

    def add(name: str, fn: Callable[[], Any]) -> None:
        fn()
        out.append(Case(f"{name}[{tag}]", name, fn))

    small = pkg.Memoized(small_fn, mc, time_threshold=0)
    small(*SMALL_ARGS)
    add("hit_small", lambda: small(*SMALL_ARGS))
    seed = pkg.memcached(client_config={"server": tuple(_split(address))}, time_threshold=0)(
        small_fn
    )
    seed(*SMALL_ARGS)
    add("hit_seed", lambda: seed(*SMALL_ARGS))
    array = np.random.default_rng(0).random(ARRAY_SIZE)
    arr = pkg.Memoized(array_fn, mc, time_threshold=0)
    arr(array)
    add("hit_array", lambda: arr(array))
    batch = pkg.Memoized(small_fn, mc, time_threshold=0, namespace="batch")
    calls = [(i, 0.5, "abc") for i in range(BATCH)]
    batch.map(calls)
    add("map_100", lambda: batch.map(calls))
    mem = pkg.Memoized(small_fn, pkg.MemoryBackend(), time_threshold=0)
    mem(*SMALL_ARGS)
    add("hit_memory", lambda: mem(*SMALL_ARGS))
    disk = pkg.Memoized(small_fn, pkg.DiskBackend(tmp / f"disk-{tag}"), time_threshold=0)
    disk(*SMALL_ARGS)
    add("hit_disk", lambda: disk(*SMALL_ARGS))
    key = small.cache_key(*SMALL_ARGS)
    add("key_small", lambda: small.cache_key(*SMALL_ARGS))
    add("backend_get", lambda: mc.get(key))
    for case in out:
        assert case.name.startswith(("key", "backend")) or case.fn() is not None
    return out


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD~1", help="git revision to compare against")
    parser.add_argument("--pin", choices=[*PLACEMENTS, "both"], default="same")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", default="", help="comma-separated row names to keep")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    import expcache as head

    all_cpus = set(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="expcache-ab-") as tmp:
        base = load_base(args.base, Path(tmp) / "base")
        pins = ["same", "split"] if args.pin == "both" else [args.pin]
        for pin in pins:
            client_cpus, server_cpus = PLACEMENTS[pin]
            os.sched_setaffinity(0, client_cpus if client_cpus is not None else all_cpus)
            with MemcachedProcess(cpus=server_cpus) as server:
                cases = rows(base, "base", server.address, Path(tmp)) + rows(
                    head, "head", server.address, Path(tmp)
                )
                if args.only:
                    keep = set(args.only.split(","))
                    cases = [c for c in cases if c.what in keep]
                n = run_interleaved(cases, seconds=args.seconds)
            os.sched_setaffinity(0, all_cpus)
            med = {c.name: summarize(c).median_us for c in cases}
            print(f"\n### {args.base} (base) vs working tree (head), pin={pin}, {n} rounds\n")
            print("| row | base µs | head µs | head - base µs | head / base |")
            print("|---|---:|---:|---:|---:|")
            for name in dict.fromkeys(c.what for c in cases):
                b, h = med[f"{name}[base]"], med[f"{name}[head]"]
                print(f"| {name} | {b:.2f} | {h:.2f} | {h - b:+.2f} | {h / b:.3f} |")


if __name__ == "__main__":
    main()
