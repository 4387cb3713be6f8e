"""The memoizer's behaviour, one test body over every backend it applies to.

Runs of the wrapped function are counted directly (a list the function appends to), so "hit"
always means "the function did not run", not just "a counter moved".
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expcache import (
    CacheStats,
    ConfigError,
    DiskBackend,
    MemcachedBackend,
    Memoized,
    MemoryBackend,
    NullBackend,
    memoize,
)
from expcache.backends import Backend

from . import helpers_workers
from .conftest import MemcachedServer

SPAWN = multiprocessing.get_context("spawn")


def counted(fn: Callable[..., Any]) -> tuple[Callable[..., Any], list[tuple[Any, ...]]]:
    """``fn`` plus the list of argument tuples it actually ran with."""
    ran: list[tuple[Any, ...]] = []

    def wrapper(*args: Any) -> Any:
        ran.append(args)
        return fn(*args)

    return wrapper, ran


def stats_of(m: Memoized[..., Any], **fields: int) -> dict[str, int]:
    return {name: getattr(m.stats, name) for name in fields}


# -- miss, hit, counters -------------------------------------------------------------------------
def test_miss_then_hit_does_not_run_the_function(any_backend: Backend) -> None:
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    ran: list[int] = []
    m = Memoized(double, any_backend)
    assert m(21) == 42
    assert m(21) == 42
    assert m(21) == 42
    assert ran == [21]  # ran once: the other two calls were hits
    assert m(5) == 10
    assert ran == [21, 5]


def test_stats_counters_are_exact(any_backend: Backend) -> None:
    def f(x: int) -> int:
        return x + 1

    m = Memoized(f, any_backend)
    for x in [1, 2, 1, 1, 3, 2]:
        m(x)
    s = m.stats
    assert (s.misses, s.hits, s.sets) == (3, 3, 3)
    assert (s.repeats, s.timeouts, s.errors, s.reconnects, s.bypassed) == (0, 0, 0, 0, 0)
    assert (s.corrupt, s.too_large, s.below_threshold, s.conflicts, s.lease_waits) == (0,) * 5
    assert s.calls == 6 and s.evaluations == 3
    assert s.compute_seconds > 0 and s.saved_seconds > 0
    assert m.cache_info() == s and m.cache_info() is not s


def test_hit_is_one_round_trip(memcached: MemcachedServer) -> None:
    m = Memoized(lambda x: x * 3, MemcachedBackend([memcached.address]))
    m(1)
    gets, sets, touches = (memcached.stat(n) for n in ("cmd_get", "cmd_set", "cmd_touch"))
    for _ in range(10):
        assert m(1) == 3
    assert m.stats.hits == 10
    assert memcached.stat("cmd_get") - gets == 10  # exactly one get per hit
    assert memcached.stat("cmd_set") - sets == 0
    assert memcached.stat("cmd_touch") - touches == 0


# -- time_threshold ------------------------------------------------------------------------------
def test_time_threshold_zero_stores_everything(any_backend: Backend) -> None:
    f, ran = counted(lambda x: x)
    m = Memoized(f, any_backend, time_threshold=0)
    m(1)
    m(1)
    assert len(ran) == 1
    assert (m.stats.sets, m.stats.below_threshold) == (1, 0)


def test_huge_time_threshold_never_stores(any_backend: Backend) -> None:
    f, ran = counted(lambda x: x)
    m = Memoized(f, any_backend, time_threshold=1e9)
    for _ in range(3):
        assert m(1) == 1
    assert len(ran) == 3
    assert (m.stats.sets, m.stats.below_threshold, m.stats.misses, m.stats.hits) == (0, 3, 3, 0)
    assert not m.check_call_in_cache(1)
    assert m.stats.lease_waits == 0  # an unstored result must not make later calls queue


def test_time_threshold_auto_compares_with_lookup_cost(any_backend: Backend) -> None:
    """'auto' stores a result when computing it took longer than a few lookups. A trivial
    function (well under a microsecond) is never worth it; 50 ms of arithmetic always is."""

    def work(n: int) -> int:
        return sum(range(n))

    m = Memoized(work, any_backend, time_threshold="auto")
    m(10)
    assert (m.stats.below_threshold, m.stats.sets) == (1, 0)
    m(3_000_000)
    assert m.stats.sets == 1
    assert m.check_call_in_cache(3_000_000) and not m.check_call_in_cache(10)


@pytest.mark.parametrize("bad", [-1, "fast", True, None])
def test_time_threshold_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigError, match="time_threshold"):
        Memoized(lambda: 1, MemoryBackend(), time_threshold=bad)


# -- keys: ignore_args, signature ----------------------------------------------------------------
def test_ignore_args_leaves_arguments_out_of_the_key(any_backend: Backend) -> None:
    def train(x: int, job_id: int = 0) -> int:
        ran.append(job_id)
        return x * 10

    ran: list[int] = []
    m = Memoized(train, any_backend, ignore_args=["job_id"])
    assert m(1, job_id=1) == 10
    assert m(1, job_id=2) == 10
    assert m(1) == 10
    assert ran == [1]
    assert m.cache_key(1, job_id=5) == m.cache_key(1, job_id=6) != m.cache_key(2, job_id=5)


def test_custom_signature_is_shared_by_different_functions(any_backend: Backend) -> None:
    def f(x: int) -> str:
        return "from f"

    def g(x: int) -> str:
        return "from g"

    # signature= owns the identity within one label: the same name= makes them one function
    mf = Memoized(f, any_backend, signature=b"utility-v1", name="utility")
    mg = Memoized(g, any_backend, signature=b"utility-v1", name="utility")
    other = Memoized(g, any_backend, signature=b"utility-v2", name="utility")
    unnamed = Memoized(g, any_backend, signature=b"utility-v1")  # another label: apart
    assert mf(1) == "from f"
    assert mg(1) == "from f"  # same signature: g's call is answered with f's entry
    assert mg.stats.hits == 1
    assert other(1) == "from g"  # another signature, another entry
    assert mf.cache_key(1) == mg.cache_key(1) != other.cache_key(1)
    assert unnamed(1) == "from g" and unnamed.cache_key(1) != mf.cache_key(1)


# -- falsy results -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, 0, 0.0, "", [], False, {}, b""], ids=repr)
def test_falsy_results_are_cached(any_backend: Backend, value: Any) -> None:
    f, ran = counted(lambda x: value)
    m = Memoized(f, any_backend)
    first = m(1)
    second = m(1)
    assert len(ran) == 1
    assert second == value and type(second) is type(value)
    assert first == value
    assert (m.stats.hits, m.stats.sets) == (1, 1)


# -- introspection -------------------------------------------------------------------------------
def test_introspection(any_backend: Backend) -> None:
    def area(w: float, h: float = 1.0) -> float:
        """Area of a rectangle."""
        return w * h

    m = Memoized(area, any_backend)
    assert m.__wrapped__ is area
    assert m.__name__ == "area" and m.__doc__ == "Area of a rectangle."
    assert m.config == any_backend.describe()
    assert m.cache_key(2.0) == m.cache_key(2.0, 1.0) == m.cache_key(w=2.0, h=1.0)
    assert m.cache_key(2.0) != m.cache_key(3.0)
    assert not m.check_call_in_cache(2.0)
    m(2.0)
    assert m.check_call_in_cache(2.0) and m.check_call_in_cache(w=2.0)
    hits_before = m.stats.hits
    assert m.check_call_in_cache(2.0)
    assert m.stats.hits == hits_before  # looking is not calling
    m.cache_clear()
    assert not m.check_call_in_cache(2.0)
    assert m.stats == CacheStats()


def test_exception_propagates_and_nothing_is_stored(any_backend: Backend) -> None:
    calls: list[int] = []

    def fails(x: int) -> int:
        calls.append(x)
        raise RuntimeError("boom")

    m = Memoized(fails, any_backend)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            m(1)
    assert calls == [1, 1]
    assert m.stats.lease_waits == 0  # the lease was released, the second call did not queue
    assert not m.check_call_in_cache(1)


def test_unpicklable_result_is_returned_not_stored(
    any_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    f, ran = counted(lambda x: (lambda: x))  # a lambda cannot be pickled
    m = Memoized(f, any_backend)
    with caplog.at_level(logging.WARNING, logger="expcache"):
        assert m(1)() == 1
        assert m(1)() == 1
    assert len(ran) == 2 and m.stats.sets == 0 and m.stats.errors == 2
    assert len([r for r in caplog.records if "cannot be serialised" in r.message]) == 1


def test_map_batches_lookups(any_backend: Backend) -> None:
    def sq(x: int) -> int:
        ran.append((x,))
        return x * x

    ran: list[tuple[int]] = []
    m = Memoized(sq, any_backend)
    assert m.map([(1,), (2,), (1,)]) == [1, 4, 1]
    assert m.map([(1,), {"x": 2}, (3,)]) == [1, 4, 9]
    assert sorted(ran) == [(1,), (2,), (3,)]
    assert (m.stats.misses, m.stats.hits, m.stats.sets) == (3, 3, 3)


def scaled(x: int, factor: int = 1) -> int:  # module level: loky workers import it
    return x * factor


def test_map_computes_misses_in_worker_processes() -> None:
    # n_jobs > 1 ships each missing call (its positional and keyword arguments) to joblib
    m = Memoized(scaled, MemoryBackend())
    calls: list[Any] = [(1,), (2,), {"x": 3, "factor": 2}, (4, 3), (1,)]
    assert m.map(calls, n_jobs=2) == [1, 2, 6, 12, 1]
    assert (m.stats.misses, m.stats.hits, m.stats.sets) == (4, 1, 4)
    assert m.map(calls, n_jobs=2) == [1, 2, 6, 12, 1]
    assert m.stats.hits == 6


def test_null_backend_turns_caching_off() -> None:
    f, ran = counted(lambda x: x + 1)
    m = Memoized(f, NullBackend())
    assert [m(1), m(1), m(1)] == [2, 2, 2]
    assert len(ran) == 3
    assert (m.stats.misses, m.stats.hits, m.stats.sets) == (3, 0, 0)
    assert not m.check_call_in_cache(1)


def test_memoize_decorator_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPCACHE_DIR", str(tmp_path / "default"))

    @memoize
    def plain(x: int) -> int:
        return x + 1

    @memoize(backend=MemoryBackend(), time_threshold=0)
    def configured(x: int) -> int:
        return x + 2

    assert plain(1) == 2 and plain(1) == 2 and plain.stats.hits == 1
    assert isinstance(plain.backend, DiskBackend)
    assert plain.backend.directory == tmp_path / "default"
    assert configured(1) == 3 and configured.stats.misses == 1


def test_backend_must_be_a_backend() -> None:
    with pytest.raises(ConfigError, match="backend="):
        Memoized(lambda: 1, "memcached")  # type: ignore[arg-type]


# -- pickling ------------------------------------------------------------------------------------
def test_pickle_round_trip_of_module_function(shared_backend: Backend) -> None:
    m = Memoized(
        helpers_workers.square, shared_backend, signing_key=b"k" * 32, time_threshold=0,
        ignore_args=(), name="custom_square",
    )
    m(3)
    clone = pickle.loads(pickle.dumps(m))
    assert clone is not m and clone.backend is not m.backend
    assert clone.__name__ == "custom_square" and clone.__wrapped__ is helpers_workers.square
    assert clone.__doc__ == helpers_workers.square.__doc__
    assert clone.__qualname__ == "square" and clone.__module__ == helpers_workers.__name__
    assert clone.config == m.config and clone.time_threshold == 0
    assert clone.serde.signing_key == b"k" * 32
    assert clone.stats == CacheStats()
    assert clone(3) == 9 and clone.stats.hits == 1


def test_spawned_child_hits_entries_written_by_the_parent(
    shared_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.log"
    monkeypatch.setenv(helpers_workers.RUNS_ENV, str(runs))
    m = Memoized(helpers_workers.square, shared_backend)
    assert m(4) == 16 and m(5) == 25
    with SPAWN.Pool(1) as pool:
        child = pool.apply(helpers_workers.call_in_child, (m, [(4,), (5,), (6,)], str(runs)))
    assert child["pid"] != os.getpid()
    assert child["results"] == [16, 25, 36]
    assert child["stats"]["hits"] == 2 and child["stats"]["misses"] == 1
    assert child["runs"] == 1  # only square(6) ran in the child
    assert helpers_workers.runs(runs, "square", os.getpid()) == 2
    assert m(6) == 36 and m.stats.hits == 1  # and the child's entry is visible here


def test_module_level_decorated_function_pickles_by_reference() -> None:
    from . import helpers_decorated

    clone = pickle.loads(pickle.dumps(helpers_decorated.cube))
    assert clone is helpers_decorated.cube


def test_identity_and_label_are_public(any_backend: Backend) -> None:
    def f(x: int) -> int:
        return x

    m = Memoized(f, any_backend)
    assert m.label == f"{__name__}.test_identity_and_label_are_public.<locals>.f"
    assert len(m.identity) == 16 and m.cache_key(1).split(":")[-1] != m.identity.hex()
    assert Memoized(f, any_backend, version="2").identity != m.identity
    assert Memoized(f, any_backend, name="utility").label == "utility"
