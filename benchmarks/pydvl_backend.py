"""pyDVL 0.10's own MemcachedCacheBackend vs expcache's adapter, on one private memcached.

The workload is the README's default job: TMC-Shapley (fixed seed, sequential) on 100
standardised training points of scikit-learn's breast-cancer data, a logistic regression
scored by accuracy on the other 469. Every row is a *separately started* Python process that
builds its own data, model, scorer, ``ModelUtility`` and cache backend, as a second job of a
sweep would. Both caches get ``CachedFuncConfig(time_threshold=0)`` (pyDVL's default of
0.3 s stores nothing for this model), so any difference is in the keys.

    .venv/bin/python benchmarks/pydvl_backend.py [--updates 50] [--seconds 10] [--out FILE]

Printed: a Markdown table per part, and a JSON record (``--out``). Parts:

1. runs: per backend, a first process on an empty server and a second process after it --
   wall time of ``fit``, utility calls, hits, evaluations, entries stored;
2. hit cost: per-call cost of ``utility(sample)`` answered from the cache, both backends
   interleaved in one process on the same 200 stored subsets, next to a raw memcached get
   and an uncached evaluation.

Not part of CI; no number here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Case, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm

VARIANTS = {
    "none": "no cache (pyDVL alone)",
    "pydvl": "pyDVL 0.10 MemcachedCacheBackend",
    "pydvl_prefix": 'pyDVL 0.10 MemcachedCacheBackend, hash_prefix="fixed"',
    "expcache": "expcache ExpcacheCacheBackend(MemcachedBackend)",
}


def build(variant: str, address: str) -> Any:
    """The data and a ModelUtility with the variant's cache, from scratch (in any process)."""
    warnings.simplefilter("ignore")
    from pydvl.utils.caching import CachedFuncConfig
    from pydvl.valuation import Dataset, ModelUtility, SupervisedScorer
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, train_size=100, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(x_tr)
    train = Dataset(scaler.transform(x_tr), y_tr)
    test = Dataset(scaler.transform(x_te), y_te)
    cache: Any = None
    host, port = address.split(":")
    if variant in ("pydvl", "pydvl_prefix"):
        from pydvl.utils.caching.memcached import MemcachedCacheBackend, MemcachedClientConfig

        cache = MemcachedCacheBackend(MemcachedClientConfig(server=(host, int(port))))
    elif variant == "expcache":
        from expcache.backends import MemcachedBackend
        from expcache.integrations.pydvl_backend import ExpcacheCacheBackend

        cache = ExpcacheCacheBackend(MemcachedBackend([address]))
    prefix = "fixed" if variant == "pydvl_prefix" else None
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    model = LogisticRegression(C=1.0, max_iter=1000, solver="lbfgs", random_state=0)
    utility = ModelUtility(
        model, scorer, cache_backend=cache, show_warnings=False,
        cached_func_options=CachedFuncConfig(time_threshold=0, hash_prefix=prefix),
    )
    return train, utility


def child(variant: str, address: str, updates: int) -> None:
    """One run in this (fresh) process; prints one JSON line."""
    from pydvl.valuation import MaxUpdates, TMCShapleyValuation

    train, utility = build(variant, address)
    counted = _count_evaluations(utility)
    method = TMCShapleyValuation(utility, is_done=MaxUpdates(updates), seed=42, progress=False)
    started = time.perf_counter()
    method.fit(train)
    wall = time.perf_counter() - started
    stats = utility.cache_stats
    out = {
        "wall_s": wall,
        "evaluations": counted[0],
        "hits": None if stats is None else stats.hits,
        "sets": None if stats is None else stats.sets,
        "values": method.result.values.tolist(),
    }
    print(json.dumps(out))


def _count_evaluations(utility: Any) -> list[int]:
    """Count real model fits (the model's own ``fit``), whatever the cache says."""
    counter = [0]
    cls = type(utility.model)
    fit = cls.fit

    def counting_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return fit(self, *args, **kwargs)

    cls.fit = counting_fit
    return counter


def run_child(variant: str, address: str, updates: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--address", address,
         "--updates", str(updates)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {variant} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def runs(server: MemcachedProcess, updates: int) -> list[dict[str, Any]]:
    rows = []
    reference = None
    for variant in VARIANTS:
        server_flush(server)
        for attempt in ("first process", "second process"):
            r = run_child(variant, server.address, updates)
            if reference is None:
                reference = r["values"]
            calls = r["hits"] + r["evaluations"] if r["hits"] is not None else r["evaluations"]
            rows.append({
                "variant": variant, "run": attempt, "wall_s": r["wall_s"], "calls": calls,
                "hits": r["hits"], "evaluations": r["evaluations"], "sets": r["sets"],
                "values_equal_uncached": r["values"] == reference,
            })
            if variant == "none":
                break
    return rows


def server_flush(server: MemcachedProcess) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
        s.sendall(b"flush_all\r\n")
        s.recv(64)


def hit_cost(server: MemcachedProcess, seconds: float) -> list[dict[str, Any]]:
    import numpy as np
    from pydvl.valuation.types import Sample

    from expcache.backends import MemcachedBackend

    rng = np.random.default_rng(0)
    samples = [
        Sample(None, rng.choice(100, size=int(rng.integers(5, 100)), replace=False))
        for _ in range(200)
    ]
    cases = []
    for variant in ("pydvl", "expcache", "none"):
        train, utility = build(variant, server.address)
        utility = utility.with_dataset(train)
        for s in samples:  # store all 200 (the uncached row just evaluates)
            utility(s)
        following = itertools.cycle(samples).__next__  # every call: the next of the 200

        def call(u: Any = utility, following: Any = following) -> Any:
            return u(following())

        cases.append(Case(variant, VARIANTS[variant], call))
    raw = MemcachedBackend([server.address])
    raw.set("raw-probe", b"x" * 200)
    cases.append(Case("raw_get", "raw MemcachedBackend.get, 200 bytes", lambda: raw.get("raw-probe")))
    run_interleaved(cases, seconds=seconds)
    out = []
    for case in cases:
        s = summarize(case)
        out.append({"row": case.name, "what": case.what, "n": s.n,
                    "median_us": s.median_us, "p90_us": s.p90_us})
    return out


def table(rows: list[dict[str, Any]], hits: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | run | wall time of fit | utility calls | hits | evaluations | values = uncached |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = "—" if r["hits"] is None else f"{r['hits']:,} ({r['hits'] / r['calls']:.0%})"
        lines.append(
            f"| {VARIANTS[r['variant']]} | {r['run']} | {r['wall_s']:.2f} s | {r['calls']:,} | "
            f"{rate} | {r['evaluations']:,} | {'yes' if r['values_equal_uncached'] else 'NO'} |"
        )
    lines += ["", "| call | median | p90 |", "|---|---|---|"]
    for h in hits:
        lines.append(f"| {h['what']} | {h['median_us']:.0f} µs | {h['p90_us']:.0f} µs |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=50, help="TMC MaxUpdates budget")
    p.add_argument("--seconds", type=float, default=10.0, help="hit-cost measuring time")
    p.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.address, args.updates)
        return
    exit_on_sigterm()
    warnings.simplefilter("ignore")  # pyDVL's import-time deprecation chatter
    with MemcachedProcess(threads=1) as server:
        rows = runs(server, args.updates)
        server_flush(server)
        hits = hit_cost(server, args.seconds)
    import pydvl
    import sklearn

    record = {
        "python": platform.python_version(), "pydvl": pydvl.__version__,
        "sklearn": sklearn.__version__, "machine": platform.machine(),
        "updates": args.updates, "runs": rows, "hit_cost": hits,
    }
    print(table(rows, hits))
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
