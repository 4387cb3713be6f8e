"""pyDVL 0.10 with expcache as its ``cache_backend``: unchanged user code, content keys.

Every test builds a real ``ModelUtility(model, scorer, cache_backend=...)`` and lets pyDVL
drive it (direct calls, LOO, TMC-Shapley, joblib workers, separately started processes).
Where pyDVL's own backends behave differently, the same steps are run on them and their
behaviour is asserted too, so the comparison in the README stays true.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():  # pyDVL's import-time deprecation chatter
    warnings.simplefilter("ignore", FutureWarning)
    pytest.importorskip("pydvl", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
    pytest.importorskip("sklearn", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
    from pydvl.utils.caching import CachedFuncConfig, InMemoryCacheBackend
    from pydvl.valuation import (
        Dataset,
        LOOValuation,
        MaxUpdates,
        ModelUtility,
        SupervisedScorer,
        TMCShapleyValuation,
    )

from joblib import parallel_config
from pydvl.valuation.types import ClasswiseSample, Sample
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, SGDClassifier

from expcache import CacheStats, ConfigError, RepetitionPolicy
from expcache.backends import MemcachedBackend, MemoryBackend
from expcache.integrations.pydvl import cached_utility
from expcache.integrations.pydvl_backend import CachedUtilityFunc, ExpcacheCacheBackend

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

N_TRAIN = 24
REPO = Path(__file__).resolve().parents[1]


def make_data(seed: int = 0) -> tuple[Dataset, Dataset]:
    x, y = make_classification(
        n_samples=N_TRAIN + 60, n_features=5, n_informative=3, random_state=seed
    )
    return Dataset.from_arrays(x, y, train_size=N_TRAIN, random_state=0, stratify_by_target=True)


def make_utility(test: Dataset, cache: Any = None, **options: Any) -> ModelUtility[Any, Any]:
    """A fresh model and scorer every time, as a separately written script would build them."""
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    config = CachedFuncConfig(**options) if options else None
    return ModelUtility(
        LogisticRegression(), scorer, cache_backend=cache, cached_func_options=config,
        show_warnings=False,
    )


def adapter(backend: Any, **kw: Any) -> ExpcacheCacheBackend:
    # time_threshold=0: store every evaluation, however fast, so counts are exact.
    return ExpcacheCacheBackend(backend, time_threshold=0, **kw)


def loo(utility: Any, data: Dataset | None = None) -> np.ndarray[Any, Any]:
    return LOOValuation(utility).fit(data or make_data()[0]).result.values


def tmc(utility: Any, n_jobs: int = 1) -> np.ndarray[Any, Any]:
    method = TMCShapleyValuation(utility, is_done=MaxUpdates(4), seed=11)
    with parallel_config(n_jobs=n_jobs):
        method.fit(make_data()[0])
    return method.result.values


@pytest.fixture
def mc(memcached: Any) -> MemcachedBackend:
    return MemcachedBackend([memcached.address], timeout=2.0)


def wrapper(utility: ModelUtility[Any, Any]) -> CachedUtilityFunc:
    fn = utility._utility_wrapper  # what pyDVL built with our wrap()
    assert isinstance(fn, CachedUtilityFunc)
    return fn


# --------------------------------------------------------------------- keys
def test_the_same_subset_in_any_order_or_with_any_idx_is_one_entry(mc: MemcachedBackend) -> None:
    train, test = make_data()
    cache = adapter(mc)
    u = make_utility(test, cache).with_dataset(train)
    samples = [
        Sample(3, np.array([5, 1, 9, 20, 13])),
        Sample(None, np.array([13, 20, 9, 5, 1])),
        Sample(7, np.array([1, 5, 9, 13, 20], dtype=np.int32)),
    ]
    values = [u(s) for s in samples]
    assert values[0] == values[1] == values[2]
    assert (cache.stats.misses, cache.stats.hits, cache.stats.sets) == (1, 2, 1)
    assert u.cache_stats == cache.stats  # what pyDVL's ModelUtility.cache_stats reports
    keys = {wrapper(u).cache_key(s) for s in samples}
    assert len(keys) == 1 and mc.get(keys.pop()) is not None
    # Extra fields of Sample subclasses change what is evaluated: they are in the key.
    k = wrapper(u).cache_key
    k0 = k(ClasswiseSample(None, np.array([1, 5]), label=0, ooc_subset=np.array([2])))
    k1 = k(ClasswiseSample(None, np.array([1, 5]), label=1, ooc_subset=np.array([2])))
    assert len({k0, k1, k(Sample(None, np.array([1, 5])))}) == 3
    # pyDVL's own backend keys the pickled Sample: three spellings, three evaluations.
    own = InMemoryCacheBackend()
    v = make_utility(test, own, time_threshold=0).with_dataset(train)
    for s in samples:
        v(s)
    assert (own.stats.misses, own.stats.hits) == (3, 0)


def test_a_utility_rebound_to_other_data_gets_that_datas_values(mc: MemcachedBackend) -> None:
    train, test = make_data()
    x, y = train.data()
    flipped = Dataset(x, 1 - y)  # same indices, other labels: other values
    plain_a, plain_b = loo(make_utility(test), train), loo(make_utility(test), flipped)
    assert not np.array_equal(plain_a, plain_b)
    u = make_utility(test, adapter(mc))
    assert np.array_equal(loo(u, train), plain_a)
    assert np.array_equal(loo(u, flipped), plain_b)
    # pyDVL's own key has no data in it: the second dataset gets the first one's values.
    v = make_utility(test, InMemoryCacheBackend(), time_threshold=0)
    assert np.array_equal(loo(v, train), plain_a)
    assert np.array_equal(loo(v, flipped), plain_a)


def test_entries_are_shared_with_cached_utility(mc: MemcachedBackend) -> None:
    """The adapter and ``cached_utility`` (the Hydra app's path) key a utility alike."""
    train, test = make_data()
    u = make_utility(test, adapter(mc))
    u = u.with_dataset(train)
    values = loo(u)
    cu = cached_utility(make_utility(test), mc, time_threshold=0)
    sample = Sample(None, np.array([4, 2, 0]))
    assert cu.with_dataset(train).cache_key(sample) == wrapper(u).cache_key(sample)
    assert np.array_equal(loo(cu), values)
    assert (cu.stats.hits, cu.stats.misses) == (N_TRAIN + 1, 0)


def test_config_fields_that_name_processes_or_arguments_stay_out_of_the_key(
    mc: MemcachedBackend,
) -> None:
    train, test = make_data()
    cache = adapter(mc)
    a = make_utility(test, cache, hash_prefix="run-a", ignore_args=["job_id"])
    b = make_utility(test, cache, hash_prefix="run-b")
    sample = Sample(None, np.array([3, 1, 2]))
    assert wrapper(a.with_dataset(train, copy=False)).cache_key(sample) == wrapper(
        b.with_dataset(train, copy=False)
    ).cache_key(sample)
    # ... while the adapter's own version= separates experiments.
    c = make_utility(test, adapter(mc, version="2")).with_dataset(train, copy=False)
    assert wrapper(c).cache_key(sample) != wrapper(a).cache_key(sample)


# --------------------------------------------------------------------- values
@pytest.mark.parametrize("run", [loo, tmc], ids=["loo", "tmc_shapley"])
def test_values_equal_uncached_and_a_rebuilt_utility_evaluates_nothing(
    mc: MemcachedBackend, run: Any
) -> None:
    _, test = make_data()
    plain = run(make_utility(test))
    first = adapter(mc)
    cold = run(make_utility(test, first))
    second = adapter(mc)  # a new adapter, model and scorer: same content, same entries
    warm = run(make_utility(test, second))
    assert np.array_equal(plain, cold) and np.array_equal(plain, warm)
    assert first.stats.misses > 0 and first.stats.sets == first.stats.misses
    # failed fits (single-class subsets) were never stored: exactly those are evaluated again
    assert second.stats.failed == first.stats.failed
    assert (second.stats.misses, second.stats.hits) == (0, first.stats.calls - first.stats.failed)


def test_joblib_workers_get_the_adapter_pickled_and_share_its_entries(
    mc: MemcachedBackend,
) -> None:
    _, test = make_data()
    cache = adapter(mc)
    with parallel_config(n_jobs=2):
        values = loo(make_utility(test, cache))
    assert np.array_equal(values, loo(make_utility(test)))
    # The parent evaluated only u(N); the N leave-one-out sets were evaluated in workers,
    # which count in their own processes -- and stored every entry:
    assert (cache.stats.calls, cache.stats.misses) == (1, 1)
    again = adapter(mc)
    assert np.array_equal(loo(make_utility(test, again)), values)
    assert (again.stats.hits, again.stats.misses) == (N_TRAIN + 1, 0)


@pytest.mark.filterwarnings("ignore:.*tasks which were still being processed:UserWarning")
def test_tmc_shapley_in_workers_fills_the_cache_with_exact_values(mc: MemcachedBackend) -> None:
    _, test = make_data()
    # lease_ttl=1: pyDVL kills busy workers when it stops; their leases then expire quickly.
    tmc(make_utility(test, adapter(mc, lease_ttl=1.0)), n_jobs=2)
    after = adapter(mc, lease_ttl=1.0)
    assert np.array_equal(tmc(make_utility(test, after)), tmc(make_utility(test)))
    assert after.stats.hits > 0  # found entries the workers stored


def test_the_adapter_pickles_without_connecting_and_a_dead_server_costs_no_crash() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    train, test = make_data()
    cache = ExpcacheCacheBackend(
        MemcachedBackend([f"127.0.0.1:{port}"], connect_timeout=0.2), time_threshold=0
    )
    u = pickle.loads(pickle.dumps(make_utility(test, cache)))  # as joblib ships it
    copy = u.cache
    assert isinstance(copy, ExpcacheCacheBackend) and copy.token == cache.token
    assert copy.stats == CacheStats()  # built, pickled, unpickled, wrapped: nothing tried yet
    sample = Sample(None, np.arange(N_TRAIN))
    assert u.with_dataset(train)(sample) == make_utility(test).with_dataset(train)(sample)
    assert copy.stats.errors == 1 and copy.stats.misses == 1
    assert cache.stats == copy.stats  # copies in one process count together
    # pyDVL's own memcached backend connects in __init__ (and in every unpickled copy):
    from pydvl.utils.caching.memcached import MemcachedCacheBackend, MemcachedClientConfig

    with pytest.raises(ConnectionRefusedError):
        MemcachedCacheBackend(MemcachedClientConfig(server=("127.0.0.1", port)))


# --------------------------------------------------------------------- CachedFuncConfig
def test_time_threshold_comes_from_the_config_unless_the_adapter_sets_one(
    mc: MemcachedBackend,
) -> None:
    train, test = make_data()
    sample = Sample(None, np.arange(N_TRAIN))
    follows = ExpcacheCacheBackend(mc)  # pyDVL's default config: store only after 0.3 s
    u = make_utility(test, follows).with_dataset(train)
    u(sample), u(sample)
    assert (follows.stats.misses, follows.stats.below_threshold, follows.stats.sets) == (2, 2, 0)
    own = ExpcacheCacheBackend(mc, time_threshold=0)  # overrides every config
    v = make_utility(test, own, time_threshold=1e9).with_dataset(train)
    v(sample), v(sample)
    assert (own.stats.misses, own.stats.hits) == (1, 1)


def test_repeated_evaluations_become_a_repetition_policy(mc: MemcachedBackend) -> None:
    train, test = make_data()
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    config = CachedFuncConfig(
        time_threshold=0, allow_repeated_evaluations=True, min_repetitions=3, rtol_stderr=1e9
    )
    sgd = SGDClassifier(random_state=None, max_iter=5, tol=None)
    cache = ExpcacheCacheBackend(mc)
    u = ModelUtility(sgd, scorer, cache_backend=cache, cached_func_options=config)
    u = u.with_dataset(train)
    sample = Sample(None, np.arange(N_TRAIN))
    for _ in range(5):
        u(sample)
    s = cache.stats  # exactly min_repetitions evaluations (pyDVL's own rule runs one more)
    assert (s.misses, s.repeats, s.hits) == (1, 2, 2)
    assert wrapper(u).memoized.moments(np.arange(N_TRAIN), None, run=None).n == 3  # type: ignore[union-attr]
    # The adapter's own policy wins over the config's.
    capped = ExpcacheCacheBackend(
        mc, repeat=RepetitionPolicy(min_repetitions=2, rtol_stderr=0.0, max_repetitions=2)
    )
    v = ModelUtility(sgd, scorer, cache_backend=capped, cached_func_options=config)
    v = v.with_dataset(train)
    other = Sample(None, np.arange(N_TRAIN - 1))  # moments are per key, shared by policies
    for _ in range(4):
        v(other)
    assert (capped.stats.misses, capped.stats.repeats, capped.stats.hits) == (1, 1, 2)


def test_plain_functions_follow_pydvls_ignore_args_rule(mc: MemcachedBackend) -> None:
    cache = ExpcacheCacheBackend(mc)
    config = CachedFuncConfig(time_threshold=0, ignore_args=["job_id", "run_id"])

    def f(x: int, job_id: int = 0) -> int:
        return x * 10

    def g(x: int, **kwargs: Any) -> int:
        return x * 100

    cf, cg = cache.wrap(f, config=config), cache.wrap(g, config=config)
    assert [cf(1, job_id=1), cf(1, job_id=2), cg(2, job_id=1, run_id=3), cg(2, job_id=9)] == [
        10, 10, 200, 200
    ]
    assert (cache.stats.misses, cache.stats.hits) == (2, 2)
    assert cf.stats == cache.stats


# --------------------------------------------------------------------- contract, errors
def test_signing_rejects_entries_written_with_another_key(mc: MemcachedBackend) -> None:
    train, test = make_data()
    sample = Sample(None, np.arange(N_TRAIN))
    writer = adapter(mc, signing_key="k" * 32)
    make_utility(test, writer).with_dataset(train)(sample)
    same = adapter(mc, signing_key="k" * 32)
    make_utility(test, same).with_dataset(train)(sample)
    assert same.stats.hits == 1
    reader = adapter(mc, signing_key="other-key-" * 4)
    make_utility(test, reader).with_dataset(train)(sample)
    assert (reader.stats.corrupt, reader.stats.hits, reader.stats.misses) == (1, 0, 1)


def test_clear_get_set_and_combine_hashes(mc: MemcachedBackend) -> None:
    train, test = make_data()
    cache = adapter(mc)
    u = make_utility(test, cache).with_dataset(train)
    sample = Sample(None, np.arange(5))
    u(sample)
    key = wrapper(u).cache_key(sample)
    # A colleague's entries on the same server: another name, another namespace.
    others = [adapter(mc, name="colleague"), adapter(mc, namespace="elsewhere")]
    kept = []
    for other in others:
        v = make_utility(test, other).with_dataset(train)
        v(sample)
        kept.append(wrapper(v).cache_key(sample))
    assert mc.get(key) is not None and cache.stats.calls == 1
    cache.clear()
    assert mc.get(key) is None and cache.stats.calls == 0
    assert all(mc.get(k) is not None for k in kept)  # scoped: never the whole server
    assert cache.combine_hashes("a", "b") == "a:b"
    with pytest.raises(NotImplementedError, match="wrap"):
        cache.get("a:b")
    with pytest.raises(NotImplementedError, match="wrap"):
        cache.set("a:b", 1.0)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"time_threshold": -1}, "time_threshold"),
        ({"time_threshold": "soon"}, "time_threshold"),
        ({"repeat": 3}, "repeat"),
        ({"signature": "text"}, "signature"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_options_are_config_errors_naming_the_parameter(
    kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(ConfigError) as info:
        ExpcacheCacheBackend(MemoryBackend(), **kwargs)
    assert info.value.param == param


def test_bad_options_checked_by_memoized_fail_at_construction() -> None:
    for kwargs in ({"namespace": "has space"}, {"signing_key": "short"}, {"lease_ttl": 0}):
        with pytest.raises(ConfigError):
            ExpcacheCacheBackend(MemoryBackend(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ExpcacheCacheBackend("127.0.0.1:11211")  # type: ignore[arg-type]
    _, test = make_data()
    with pytest.raises(ConfigError) as info:  # a bad CachedFuncConfig, when pyDVL wraps
        make_utility(test, ExpcacheCacheBackend(MemoryBackend()), time_threshold=-1.0)
    assert info.value.param == "CachedFuncConfig.time_threshold"


# --------------------------------------------------------------------- separate processes
CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    sys.path.insert(0, sys.argv[1])
    from tests.test_pydvl_backend import make_data, make_utility, loo
    kind, where, prefix = sys.argv[2], sys.argv[3], sys.argv[4] or None
    if kind == "pydvl":
        from pydvl.utils.caching.memcached import MemcachedCacheBackend, MemcachedClientConfig
        host, port = where.split(":")
        cache = MemcachedCacheBackend(MemcachedClientConfig(server=(host, int(port))))
    else:
        from expcache.backends import DiskBackend, MemcachedBackend
        from expcache.integrations.pydvl_backend import ExpcacheCacheBackend
        backend = MemcachedBackend([where]) if kind == "memcached" else DiskBackend(where)
        cache = ExpcacheCacheBackend(backend, time_threshold=0)
    train, test = make_data()
    utility = make_utility(test, cache, time_threshold=0, hash_prefix=prefix)
    values = loo(utility, train)
    stats = utility.cache_stats
    print(json.dumps({
        "values": values.tolist(), "hits": stats.hits, "misses": stats.misses,
        "sets": stats.sets, "prefix": utility.cached_func_options.hash_prefix,
    }))
    """
)


def run_child(kind: str, where: str, prefix: str = "") -> dict[str, Any]:
    """One separately started interpreter: its own model, scorer, utility and cache."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), kind, where, prefix],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memcached", "disk"])
def test_separately_started_processes_share_the_adapters_entries(
    memcached: Any, tmp_path: Path, kind: str
) -> None:
    where = memcached.address if kind == "memcached" else str(tmp_path / "cache")
    first, second = run_child(kind, where), run_child(kind, where)
    calls = N_TRAIN + 1  # u(N) and the N leave-one-out sets
    assert (first["misses"], first["hits"], first["sets"]) == (calls, 0, calls)
    assert (second["misses"], second["hits"], second["sets"]) == (0, calls, 0)
    assert first["values"] == second["values"] == loo(make_utility(make_data()[1])).tolist()


@pytest.mark.slow
def test_pydvls_own_memcached_backend_shares_nothing_across_processes(memcached: Any) -> None:
    calls = N_TRAIN + 1
    first, second = run_child("pydvl", memcached.address), run_child("pydvl", memcached.address)
    assert first["sets"] == calls  # it did store every evaluation (time_threshold=0) ...
    assert first["prefix"] != second["prefix"]  # ... under str(hash((model, scorer)))
    assert (second["hits"], second["misses"]) == (0, calls)
    assert first["values"] == second["values"]
    # The prefix is the whole difference: fixed by hand, a second process hits everything.
    fixed = [run_child("pydvl", memcached.address, "fixed") for _ in range(2)]
    assert (fixed[1]["hits"], fixed[1]["misses"]) == (calls, 0)


# --------------------------------------------------------------------- failed fits
def test_failed_fits_get_the_default_score_and_are_never_stored(mc: MemcachedBackend) -> None:
    """pyDVL's catch_errors=True turns a failing fit into the scorer's default inside the
    utility; through the adapter that default is returned but never stored (a single-class
    subset, an out-of-memory fit: a transient failure must not become a score for ever)."""
    train, test = make_data()
    cache = adapter(mc)
    u = make_utility(test, cache).with_dataset(train)
    y = train.data().y
    single = Sample(None, np.flatnonzero(y == y[0])[:3])  # one class: LogisticRegression fails
    assert u(single) == 0.0  # the scorer's default, as without a cache
    assert (cache.stats.failed, cache.stats.sets) == (1, 0)
    assert mc.get(wrapper(u).cache_key(single)) is None
    assert u(single) == 0.0 and cache.stats.failed == 2  # evaluated again, never a hit
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    strict = adapter(mc)
    raising = ModelUtility(
        LogisticRegression(), scorer, catch_errors=False, cache_backend=strict,
        show_warnings=False,
    ).with_dataset(train)
    with pytest.raises(ValueError, match="class"):  # without catch_errors: the fit's own error
        raising(single)
    assert (strict.stats.failed, strict.stats.sets) == (1, 0)
