"""A cheap synthetic experiment: the ``task=demo`` option.

It has the shape of a data-valuation run without pyDVL or scikit-learn: a "utility" scores a
subset of the training points (ridge regression fitted on the subset by a fixed number of
gradient steps, R^2 on all points), evaluated over a list of subsets. Part of that list is the
same for every seed and part depends on the seed, so in a sweep over seeds the later jobs find
the shared subsets in the cache: that is what the Hydra tests and the README recipes show.
One job costs a few hundred milliseconds at the defaults.

The utility takes everything it depends on as arguments (no closure over data), so its cache
key is exact whatever the key function does with closures. ``DemoTask``'s signature is the
``task`` schema of this option; its constructor checks every option before any work.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ... import _validate
from ...errors import ConfigError

if TYPE_CHECKING:
    from ..context import CacheContext
    from ..schemas import Schema

__all__ = ["DemoTask", "make_subsets", "schemas", "utility"]

_SHARED_STREAM = 0x5EED  # the seed-independent part of the subset list


@functools.lru_cache(maxsize=8)
def _dataset(
    data_seed: int, n_points: int, n_features: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(data_seed)
    x = rng.normal(size=(n_points, n_features))
    w = rng.normal(size=n_features)
    y = x @ w + 0.5 * rng.normal(size=n_points)
    return x, y


def utility(
    subset: tuple[int, ...],
    *,
    data_seed: int = 0,
    n_points: int = 200,
    n_features: int = 8,
    n_iter: int = 1000,
    noise: float = 0.0,
) -> float:
    """R^2 on all points of a ridge model fitted on ``subset`` (plus optional noise)."""
    x, y = _dataset(data_seed, n_points, n_features)
    idx = np.asarray(subset, dtype=np.intp)
    xs, ys = x[idx], y[idx]
    ridge = 1e-2
    step = 1.0 / (np.linalg.norm(xs, 2) ** 2 + ridge)
    w = np.zeros(n_features)
    for _ in range(n_iter):
        w -= step * (xs.T @ (xs @ w - ys) + ridge * w)
    residual = x @ w - y
    score = 1.0 - float(residual @ residual) / float(((y - y.mean()) ** 2).sum())
    if noise:
        score += noise * float(np.random.default_rng().normal())
    return score


def make_subsets(
    seed: int, *, n_points: int, subset_size: int, n_subsets: int, shared_fraction: float
) -> list[tuple[int, ...]]:
    """``n_subsets`` distinct sorted subsets: the first ``round(n_subsets*shared_fraction)``
    are the same for every seed, the rest are drawn from ``seed``."""
    n_shared = round(n_subsets * shared_fraction)
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[int, ...]] = []
    for rng, count in (
        (np.random.default_rng(_SHARED_STREAM), n_shared),
        (np.random.default_rng([seed, 1]), n_subsets - n_shared),
    ):
        drawn = 0
        while drawn < count:
            subset = tuple(
                int(i) for i in np.sort(rng.choice(n_points, subset_size, replace=False))
            )
            if subset not in seen:
                seen.add(subset)
                out.append(subset)
                drawn += 1
    return out


class DemoTask:
    """Evaluate the memoized utility over one seed's subsets."""

    def __init__(
        self,
        *,
        n_points: int = 200,
        n_features: int = 8,
        subset_size: int = 12,
        n_subsets: int = 20,
        shared_fraction: float = 0.5,
        n_iter: int = 1000,
        noise: float = 0.0,
        data_seed: int = 0,
    ) -> None:
        self.n_points = _validate.integer("n_points", n_points, ge=2)
        self.n_features = _validate.integer("n_features", n_features, ge=1)
        self.subset_size = _validate.integer("subset_size", subset_size, ge=1)
        if self.subset_size > self.n_points:
            raise ConfigError(
                param="subset_size",
                value=subset_size,
                expected=f"an integer <= n_points ({n_points})",
            )
        self.n_subsets = _validate.integer("n_subsets", n_subsets, ge=1)
        self.shared_fraction = _validate.number("shared_fraction", shared_fraction, ge=0, le=1)
        self.n_iter = _validate.integer("n_iter", n_iter, ge=0)
        self.noise = _validate.number("noise", noise, ge=0)
        self.data_seed = _validate.integer("data_seed", data_seed, ge=0)

    def __call__(self, *, ctx: CacheContext, output_dir: Path, seed: int) -> dict[str, Any]:
        memo = ctx.wrap(utility, name="utility")
        subsets = make_subsets(
            seed,
            n_points=self.n_points,
            subset_size=self.subset_size,
            n_subsets=self.n_subsets,
            shared_fraction=self.shared_fraction,
        )
        started = time.perf_counter()
        values = [
            float(
                memo(
                    s,
                    data_seed=self.data_seed,
                    n_points=self.n_points,
                    n_features=self.n_features,
                    n_iter=self.n_iter,
                    noise=self.noise,
                )
            )
            for s in subsets
        ]
        # Only cached calls ran in that loop: its wall time is what they cost (time saved).
        ctx.add_call_seconds("utility", time.perf_counter() - started)
        return {
            "seed": seed,
            "n_calls": len(values),
            "mean_utility": float(np.mean(values)),
            "subsets": [list(s) for s in subsets],
            "utilities": values,
        }


def schemas() -> list[Schema]:
    from ..schemas import Schema

    return [Schema.of("task", "demo", (DemoTask, {}), target=DemoTask)]
