"""``parallel.backend=ray``: the valuation's joblib workers as Ray tasks, on the run's cache.

``JoblibParallel.context(ctx)`` hands a Ray backend over to ``ray_context``: connect (a Ray
started here, ``auto``, or a cluster's address; inside a Ray task, the task's own cluster),
register joblib's Ray backend with what pyDVL 0.10 needs (``expcache.integrations.ray``),
then check that the run's cache reaches every host of the cluster -- a warning, or with
``cache.strict`` an error, before any evaluation. Workers share the cache like loky workers
do and report their counters through the run's ledger (a file on the driver's host, the
backend's keys on other hosts: ``expcache.ledger``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ....backends.base import Backend
from ....integrations import ray as xray

__all__ = ["ray_context", "strict_of"]


def strict_of(ctx: Any) -> bool:
    """Whether the run demanded its cache (``cache.strict``), as its context records it."""
    info = getattr(ctx, "backend_info", None) or {}
    return bool(info.get("strict", False))


@contextlib.contextmanager
def ray_context(address: str | None, n_jobs: int, ctx: Any = None) -> Iterator[list[str]]:
    """joblib on Ray for the valuation; yields the hosts of the cluster."""
    where = f"the Ray cluster at {address}" if address not in (None, "local") else "Ray"
    with xray.joblib_on_ray(address, n_jobs=n_jobs) as hosts:
        backend = getattr(ctx, "backend", None)
        if isinstance(backend, Backend):
            warned = xray.check_reach(backend, hosts, where=where, strict=strict_of(ctx))
            info = getattr(ctx, "backend_info", None)
            if warned is not None and isinstance(info, dict):
                # recorded in cache_stats.json; workers on the other hosts cannot report
                # their counts to this run either, so its totals are marked incomplete
                info["unreached_hosts"] = warned
        yield hosts
