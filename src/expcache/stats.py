"""What a memoized callable did, as plain counters.

``CacheStats`` keeps the seed's six integer fields (``sets``, ``misses``, ``hits``,
``timeouts``, ``errors``, ``reconnects``) with their old meanings and adds the counters a
long sweep needs to tell *why* a call was not a hit. Counters are plain ints so that stats
pickle, add up across workers and serialise to JSON without help.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CacheStats", "Recorder"]


@dataclass
class CacheStats:
    """Counters of one memoized callable (or a sum of several).

    hits: calls answered from the cache without running the function.
    misses: calls that found no usable entry and ran the function.
    repeats: re-evaluations of a stochastic function whose entry had not converged yet.
    sets: entries stored (or updated) successfully.
    timeouts / errors: backend operations that timed out / failed otherwise; ``errors`` also
        counts stores the server refused (full with ``-M``) and results that cannot be pickled.
    reconnects: recoveries, i.e. a backend operation that succeeded after a failure (once per
        incident, not per call).
    bypassed: calls that skipped the backend because its circuit breaker was open.
    too_large: values not stored because they exceed the configured maximum size.
    corrupt: entries rejected when read (undecodable, foreign key, bad signature).
    below_threshold: results not stored because they were computed faster than the threshold.
    conflicts: atomic updates given up after the bounded number of retries.
    failed: calls whose function raised (the exception reached the caller unchanged; nothing
        was stored).
    nonfinite: samples of a stochastic function that were NaN or infinite: returned to the
        caller but not folded into the running moments, which they would poison for ever.
    lease_waits: calls that waited (slept at least once) for another worker computing the
        same key; they end as a hit, or as a miss if they took over an expired lease.
    compute_seconds: time spent running the function in this process.
    saved_seconds: compute time the hits avoided (as measured when the entry was written).
    """

    sets: int = 0
    misses: int = 0
    hits: int = 0
    timeouts: int = 0
    errors: int = 0
    reconnects: int = 0
    repeats: int = 0
    bypassed: int = 0
    too_large: int = 0
    corrupt: int = 0
    below_threshold: int = 0
    conflicts: int = 0
    lease_waits: int = 0
    failed: int = 0
    nonfinite: int = 0
    compute_seconds: float = 0.0
    saved_seconds: float = 0.0

    @property
    def calls(self) -> int:
        """Every call is exactly one of a hit, a miss, a repeat or a failure."""
        return self.hits + self.misses + self.repeats + self.failed

    @property
    def evaluations(self) -> int:
        """How often the function actually ran (a failed run included)."""
        return self.misses + self.repeats + self.failed

    def __add__(self, other: CacheStats) -> CacheStats:
        if not isinstance(other, CacheStats):
            return NotImplemented
        return CacheStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __sub__(self, other: CacheStats) -> CacheStats:
        if not isinstance(other, CacheStats):
            return NotImplemented
        return CacheStats(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def copy(self) -> CacheStats:
        return dataclasses.replace(self)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, type(f.default)())  # type: ignore[misc]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters plus the derived totals."""
        out: dict[str, Any] = dataclasses.asdict(self)
        out["calls"] = self.calls
        out["evaluations"] = self.evaluations
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Recorder:
    """The one place a memoized function's counters change: one lock, exact under threads.

    The call paths report what happened (``add(misses=1, compute_seconds=t)``); the hit path
    has its own two-field method because it is the call made most often. ``stats`` is the live
    object that ``Memoized.stats`` exposes (reset in place by ``cache_clear``).
    """

    __slots__ = ("__weakref__", "lock", "stats")

    def __init__(self, stats: CacheStats | None = None) -> None:
        self.stats = stats if stats is not None else CacheStats()
        self.lock = threading.Lock()
        _RECORDERS.add(self)

    def hit(self, saved_seconds: float) -> None:
        stats = self.stats
        with self.lock:
            stats.hits += 1
            stats.saved_seconds += saved_seconds

    def add(self, **deltas: float) -> None:
        stats = self.stats
        with self.lock:
            for name, delta in deltas.items():
                setattr(stats, name, getattr(stats, name) + delta)

    def snapshot(self) -> CacheStats:
        with self.lock:
            return self.stats.copy()

    def reset(self) -> None:
        with self.lock:
            self.stats.reset()


# A forked child inherits every lock in the state it had at the fork: one that another parent
# thread held mid-call would never be released there, and the child's first call of that
# function would wait for ever. The child (alone at that point) gets fresh locks.
_RECORDERS: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    for recorder in list(_RECORDERS):
        recorder.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)
