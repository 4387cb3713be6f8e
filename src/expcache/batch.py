"""``Memoized.map``: many calls with one ``get_many`` and one ``set_many``.

A batch of hits costs one multi-get round trip instead of one round trip per call, which is
most of what a batch of cheap lookups costs. Misses are computed in order (or with joblib
when ``n_jobs != 1``) and stored together. Stochastic functions fall back to one call each:
their updates must be atomic per key. Stampede leases are not taken for batches (a batch is
typically one worker's share of distinct work); duplicates within a batch are computed once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from .calls import Core
from .entries import ValueEntry
from .errors import SerdeError
from .guard import Outcome

__all__ = ["run_batch"]

Call = tuple[tuple[Any, ...], Mapping[str, Any]]


_NO_KWARGS: Final[Mapping[str, Any]] = MappingProxyType({})  # shared: nothing mutates it


def _normalise(calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]) -> list[Call]:
    return [
        (c, _NO_KWARGS) if type(c) is tuple
        else ((), dict(c)) if isinstance(c, Mapping)
        else (tuple(c), _NO_KWARGS)
        for c in calls
    ]


def run_batch(
    core: Core,
    call_one: Callable[..., Any],
    calls: Iterable[tuple[Any, ...] | Mapping[str, Any]],
    n_jobs: int = 1,
) -> list[Any]:
    items = _normalise(calls)
    if core.off or core.policy is not None:
        return [call_one(*a, **k) for a, k in items]
    keys = core.keys.many(items)
    unique = list(dict.fromkeys(keys))
    rec = core.rec
    guard = core.guard
    found: Any = {}
    usable = guard.breaker.allow()
    if not usable:
        rec.add(bypassed=len(items))
    else:
        found = guard.run(core.backend.get_many, unique)
        if type(found) is Outcome:
            usable, found = False, {}
    results: dict[str, tuple[Any, ...]] = {}  # key -> (value, compute seconds, ...)
    hit = core.serde.hit
    loads = core.serde.loads
    for key, data in found.items():
        try:  # inline, and Serde.hit first, as in Core.call: the all-hits batch is the case
            got: tuple[Any, ...] | None = hit(key, data)  # to make cheap
            if got is None:
                entry = loads(key, data)
                if type(entry) is not ValueEntry:
                    continue
                got = (entry.value, entry.meta.seconds)
        except SerdeError as exc:
            guard.corrupt(exc)
            continue
        results[key] = got
    if len(results) == len(unique):  # every call hit
        pairs = [results[key] for key in keys]
        rec.add(hits=len(keys), saved_seconds=sum([p[1] for p in pairs]))
        return [p[0] for p in pairs]
    todo: dict[str, Call] = {}
    hits = 0
    saved = 0.0
    for key, call in zip(keys, items, strict=True):
        if key in results:
            hits += 1
            saved += results[key][1]
        else:
            todo.setdefault(key, call)
    computed = _compute_many(core, todo, n_jobs)
    to_store: dict[str, bytes] = {}
    threshold = core.threshold()
    below = 0
    for key, (value, elapsed) in computed.items():
        results[key] = (value, elapsed)
        if elapsed < threshold:
            below += 1
            continue
        try:
            entry = ValueEntry(value, core.call_meta(elapsed, *todo[key]))
            to_store[key] = core.serde.dumps(key, entry)
        except Exception as exc:
            guard.unstorable(exc)
    stored = 0
    if to_store and usable:
        got = guard.run(core.backend.set_many, to_store, core.expire, write=True)
        if type(got) is not Outcome:
            stored = len(to_store)
    # duplicates of a computed call within the batch are answered without running
    duplicates = len(items) - hits - len(computed)
    rec.add(
        hits=hits + duplicates,
        misses=len(computed),
        saved_seconds=saved,
        below_threshold=below,
        sets=stored,
    )
    return [results[key][0] for key in keys]


def _compute_many(core: Core, todo: Mapping[str, Call], n_jobs: int) -> dict[str, tuple[Any, float]]:
    if n_jobs == 1 or len(todo) < 2:
        out = {key: core.run(a, k) for key, (a, k) in todo.items()}
    else:
        from joblib import Parallel, delayed  # optional: only for parallel batches

        fn = core.fn
        try:
            outs = Parallel(n_jobs=n_jobs)(  # dict(k): a mappingproxy does not pickle
                delayed(_timed)(fn, a, dict(k)) for a, k in todo.values()
            )
        except BaseException:
            core.rec.add(failed=1)
            raise
        out = dict(zip(todo, outs, strict=True))
    core.rec.add(compute_seconds=sum(e for _, e in out.values()))
    return out


def _timed(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started
