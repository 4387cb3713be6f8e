"""Record the running moments the cache holds for every subset of a leave-one-out run.

Usage (after each run, from the repository root)::

    .venv/bin/python experiments/stochastic_repetitions/snapshot.py RUN_DIR

Rebuilds the run's utility from ``RUN_DIR/.hydra/config.yaml`` exactly as the valuation task
does (same data, model, scorer and cache namespace, hence the same content fingerprint and the
same keys), then reads the stored ``(n, mean, M2)`` of the full training set and of each
leave-one-out set, and writes ``RUN_DIR/moments.csv``: subset, n, mean, stderr, converged.
Reading only: nothing is evaluated and no counter of the cache moves.
"""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _moments(memo: Any, key: str) -> Any:
    """The ``Moments`` stored under ``key``, or None.

    expcache has no public accessor for stored moments yet (see the recipe's README): this
    decodes the entry with the memoizer's own serde; a stochastic entry is the tuple
    ``("m", n, mean, M2, seconds)``.
    """
    from expcache import Moments

    data = memo.backend.get(key)
    if data is None:
        return None
    entry = memo.serde.loads(key, data)
    if not isinstance(entry, tuple) or entry[0] != "m":
        raise SystemExit(f"{key}: not a stochastic entry ({entry[:1]!r}): was policy=stochastic?")
    return Moments(int(entry[1]), float(entry[2]), float(entry[3]))


def snapshot(run_dir: Path) -> Path:
    from omegaconf import OmegaConf

    from expcache.app import build_context, plan  # registers schemas and resolvers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from pydvl.valuation.types import Sample

        from expcache.integrations.pydvl import cached_utility

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    if "LOOValuation" not in str(cfg.method._target_):
        raise SystemExit(f"{run_dir}: this script reads leave-one-out runs (method=loo)")
    checked = plan(cfg)  # type: ignore[arg-type]
    ctx = build_context(checked)  # the run's backend and policy
    data, _, _, utility = checked.task.setup()  # type: ignore[attr-defined]  # ValuationTask
    name = str(cfg.task.name)
    cached = cached_utility(
        utility.with_dataset(data.train),
        ctx.backend,
        memoizer=lambda fn, sig: ctx.wrap(fn, name=name, signature=sig),
    )
    try:
        memo = cached.memoized
        if memo is None or memo.repeat is None:
            raise SystemExit(f"{run_dir}: the run did not use policy=stochastic")
        n = len(data.train)
        everyone = np.arange(n)
        subsets = [("all", everyone)] + [(f"-{i}", np.delete(everyone, i)) for i in range(n)]
        out = run_dir / "moments.csv"
        with open(out, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["subset", "n", "mean", "stderr", "converged"])
            for label, subset in subsets:
                m = _moments(memo, cached.cache_key(Sample(None, subset)))
                if m is None:
                    writer.writerow([label, 0, "", "", 0])
                    continue
                stderr = m.stderr if m.n > 1 else float("nan")
                writer.writerow([label, m.n, repr(m.mean), repr(stderr), int(memo.repeat.done(m))])
    finally:
        cached.ledger.close()
        ctx.close()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = snapshot(Path(argv[0]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
