"""Issue 2 end to end: the original design's collisions, through the memoizer and a real server.

Each test would fail on the seed's keying (bytecode + constants, pickled arguments): it gets a
wrong value from the cache or misses where it must hit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from expcache import KeyEncodingError, MemcachedBackend, Memoized

from .conftest import MemcachedServer


@pytest.fixture
def backend(memcached: MemcachedServer) -> MemcachedBackend:
    return MemcachedBackend([memcached.address], timeout=2.0)


def _make_scaler(factor: float) -> Callable[[float], float]:
    def scale(x: float) -> float:
        return x * factor

    return scale


def test_closures_do_not_share_entries(backend: MemcachedBackend) -> None:
    double = Memoized(_make_scaler(2.0), backend)
    triple = Memoized(_make_scaler(3.0), backend)
    assert double(5.0) == 10.0
    assert triple(5.0) == 15.0  # the seed returned 10.0 here: same code, same constants
    assert (double.stats.hits, triple.stats.hits) == (0, 0)
    assert double(5.0) == 10.0 and double.stats.hits == 1


@dataclass
class Utility:
    """A callable 'train on a subset, score it' over a dataset held in arrays."""

    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]

    def __call__(self, subset: frozenset[int]) -> float:
        idx = sorted(subset)
        return float(self.x[idx].sum() * 10 + self.y[idx].sum())


def test_same_utility_on_two_datasets_does_not_share(backend: MemcachedBackend) -> None:
    rng = np.random.default_rng(0)
    a = Utility(rng.normal(size=20), rng.integers(0, 2, 20).astype(float))
    b = Utility(rng.normal(size=20), rng.integers(0, 2, 20).astype(float))
    ua, ub = Memoized(a, backend), Memoized(b, backend)
    subset = frozenset({1, 3, 5})
    assert ua(subset) == a(subset)
    assert ub(subset) == b(subset)  # the seed answered with a's value
    assert ub.stats.misses == 1 and ub.stats.hits == 0


def test_recreated_identical_utility_shares(backend: MemcachedBackend) -> None:
    x, y = np.arange(10.0), np.ones(10)
    first = Memoized(Utility(x, y), backend)
    first(frozenset({1, 2}))
    again = Memoized(Utility(x.copy(), y.copy()), backend)  # other objects, same content
    assert again(frozenset({2, 1})) == Utility(x, y)(frozenset({1, 2}))
    assert again.stats.hits == 1


DATA = np.arange(5.0)


def weighted(i: int) -> float:
    return float(DATA[i] * 2)


def test_changed_global_data_is_a_new_entry(backend: MemcachedBackend) -> None:
    global DATA
    before = Memoized(weighted, backend)
    assert before(3) == 6.0
    saved = DATA
    try:
        DATA = np.arange(5.0) * 10  # same code, different referenced data
        after = Memoized(weighted, backend)
        assert after(3) == 60.0
        assert after.stats.misses == 1
    finally:
        DATA = saved


def test_spellings_of_one_call_hit(backend: MemcachedBackend) -> None:
    runs: list[tuple[Any, ...]] = []

    def f(a: int, b: int = 2, *, opts: dict[str, int] | None = None) -> int:
        runs.append((a, b, opts))
        return a + b + sum((opts or {}).values())

    m = Memoized(f, backend)
    assert m(1, opts={"x": 1, "y": 2}) == 6
    assert m(1, 2, opts={"y": 2, "x": 1}) == 6
    assert m(a=1, b=2, opts={"y": 2, "x": 1}) == 6
    assert m(b=2, a=np.int64(1), opts={"x": 1, "y": 2}) == 6
    assert len(runs) == 1 and m.stats.hits == 3


def test_equal_arrays_built_differently_hit(backend: MemcachedBackend) -> None:
    m = Memoized(lambda arr: float(arr.sum()), backend)
    base = np.arange(12.0).reshape(3, 4)
    m(base)
    m(np.asfortranarray(base))
    wide = np.full((3, 8), -1.0)
    wide[:, ::2] = base
    view = wide[:, ::2]  # a strided, non-contiguous view with base's values
    assert not view.flags.c_contiguous
    m(view)
    assert m.stats.hits == 2 and m.stats.misses == 1


def test_unencodable_argument_is_a_clear_error(backend: MemcachedBackend) -> None:
    import threading

    m = Memoized(lambda lock: 1, backend)
    with pytest.raises(KeyEncodingError, match="lock"):
        m(threading.Lock())


def test_version_salt_separates_entries(backend: MemcachedBackend) -> None:
    def f(x: int) -> int:
        return x

    v1 = Memoized(f, backend, version="1")
    v2 = Memoized(f, backend, version="2")
    v1(1)
    v2(1)
    assert v2.stats.misses == 1
    assert Memoized(f, backend, version="1")(1) == 1


def test_deterministic_and_stochastic_entries_are_kept_apart(backend: MemcachedBackend) -> None:
    from expcache import RepetitionPolicy

    def noisy(x: int) -> float:
        return float(x)

    plain = Memoized(noisy, backend)
    repeated = Memoized(noisy, backend, repeat=RepetitionPolicy(min_repetitions=2))
    assert plain.cache_key(1) != repeated.cache_key(1)
    plain(1)
    repeated(1)
    repeated(1)
    plain(1)
    assert plain.stats.hits == 1  # the running moments did not overwrite the plain value
    assert repeated.stats.misses == 1
    assert repeated.stats.repeats == 1


# ------------------------------------------------------------------------------ format 3
def _local_scorer(bonus: int) -> type:
    ns: dict[str, Any] = {"__name__": "experiment"}
    src = f"class Scorer:\n    def score(self, x):\n        return x + {bonus}\n"
    exec(compile(src, "<experiment>", "exec", dont_inherit=True), ns)
    return ns["Scorer"]  # type: ignore[no-any-return]


def test_local_classes_with_one_qualname_do_not_share(backend: MemcachedBackend) -> None:
    def run(scorer: type, x: int) -> int:
        return int(scorer().score(x))

    m = Memoized(run, backend, time_threshold=0)
    assert m(_local_scorer(1), 1) == 2
    assert m(_local_scorer(2), 1) == 3  # format 2 answered 2: same "experiment.Scorer"
    assert m(_local_scorer(1), 1) == 2 and m.stats.hits == 1


def test_closure_over_a_generator_is_keyed_by_its_state(backend: MemcachedBackend) -> None:
    def make(seed: int) -> Callable[[int], float]:
        rng = np.random.default_rng(seed)

        def draw(n: int) -> float:
            return float(rng.bit_generator.state["state"]["state"] % 1000 + n)

        return draw

    first = Memoized(make(1), backend, time_threshold=0)  # format 2: KeyEncodingError here
    value = first(3)
    assert Memoized(make(1), backend, time_threshold=0)(3) == value  # same state: a hit
    other = Memoized(make(2), backend, time_threshold=0)
    other(3)
    assert other.stats.misses == 1


def test_seed_sequence_arguments_hit(backend: MemcachedBackend) -> None:
    def job(seed: np.random.SeedSequence, n: int) -> float:
        return float(np.random.default_rng(seed).random(n).sum())

    m = Memoized(job, backend, time_threshold=0)
    value = m(np.random.SeedSequence(7), 4)
    assert m(np.random.SeedSequence(7), 4) == value and m.stats.hits == 1
    m(np.random.SeedSequence(8), 4)
    assert m.stats.misses == 2
