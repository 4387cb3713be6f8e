"""The pyDVL integration against a real memcached: content keys, exact values, worker stats.

Tiny data (tens of points) and small budgets keep the file fast; the parallel tests use real
loky workers (n_jobs=2), which pyDVL kills when its stopping criterion fires.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
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
    from pydvl.valuation import (
        Dataset,
        LOOValuation,
        MaxUpdates,
        ModelUtility,
        MSRBanzhafValuation,
        SupervisedScorer,
        TMCShapleyValuation,
    )

from joblib import parallel_config
from pydvl.valuation.types import ClasswiseSample, Sample
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, SGDClassifier

from expcache import ConfigError, DiskBackend, KeyEncodingError, RepetitionPolicy
from expcache import ledger as ledger_module
from expcache.backends import MemcachedBackend, MemoryBackend, NullBackend
from expcache.integrations.pydvl import (
    CachedUtility,
    cached_utility,
    utility_fingerprint,
)
from expcache.ledger import RunLedger

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

N_TRAIN = 24
REPO = Path(__file__).resolve().parents[1]


def make_data(seed: int = 0, n_train: int = N_TRAIN) -> tuple[Dataset, Dataset]:
    x, y = make_classification(
        n_samples=n_train + 60, n_features=5, n_informative=3, random_state=seed
    )
    return Dataset.from_arrays(x, y, train_size=n_train, random_state=0, stratify_by_target=True)


def make_utility(test: Dataset, **model: Any) -> ModelUtility[Any, Any]:
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    return ModelUtility(LogisticRegression(**model), scorer, show_warnings=False)


@pytest.fixture
def mc(memcached: Any) -> MemcachedBackend:
    return MemcachedBackend([memcached.address], timeout=2.0)


def cached(utility: Any, backend: Any, **kw: Any) -> CachedUtility:
    # time_threshold=0: store every evaluation, however fast, so "nothing new" is exact.
    return cached_utility(utility, backend, time_threshold=0, **kw)


# --------------------------------------------------------------------- keys
def test_same_subset_in_any_order_or_with_any_idx_is_one_entry(mc: MemcachedBackend) -> None:
    train, test = make_data()
    cu = cached(make_utility(test), mc).with_dataset(train)
    a = cu(Sample(3, np.array([5, 1, 9, 20, 13])))
    b = cu(Sample(None, np.array([13, 20, 9, 5, 1])))
    c = cu(Sample(7, np.array([1, 5, 9, 13, 20], dtype=np.int32)))
    assert a == b == c
    stats = cu.stats
    assert (stats.misses, stats.hits, stats.sets) == (1, 2, 1)
    assert mc.get(cu.cache_key(Sample(None, np.array([1, 5, 9, 13, 20])))) is not None
    key = cu.cache_key(Sample(0, np.array([20, 13, 9, 5, 1])))
    assert key == cu.cache_key(Sample(None, np.array([1, 5, 9, 13, 20])))
    assert key != cu.cache_key(Sample(None, np.array([1, 5, 9, 13])))
    # Extra fields of Sample subclasses change what is evaluated, so they are in the key.
    k0 = cu.cache_key(ClasswiseSample(None, np.array([1, 5]), label=0, ooc_subset=np.array([2])))
    k1 = cu.cache_key(ClasswiseSample(None, np.array([1, 5]), label=1, ooc_subset=np.array([2])))
    assert len({k0, k1, cu.cache_key(Sample(None, np.array([1, 5])))}) == 3


def test_the_empty_set_is_not_an_evaluation(mc: MemcachedBackend) -> None:
    train, test = make_data()
    cu = cached(make_utility(test), mc).with_dataset(train)
    assert cu(None) == cu(Sample(None, np.array([], dtype=int))) == 0.0  # scorer.default
    assert cu.stats.calls == 0


def test_two_datasets_never_share_entries(mc: MemcachedBackend) -> None:
    train, test = make_data()
    x, y = train.data()
    y2 = y.copy()
    y2[:6] = 1 - y2[:6]  # same shape and indices, different labels
    other = Dataset(x, y2)
    utility = make_utility(test)
    base = cached(utility, mc)
    on_a, on_b = base.with_dataset(train), base.with_dataset(other)
    assert on_a.signature != on_b.signature
    subset = Sample(None, np.arange(12))
    value_a, value_b = on_a(subset), on_b(subset)
    assert on_a.stats.misses == 2 and on_a.stats.hits == 0  # B did not get A's entry
    assert value_b == utility.with_dataset(other)(subset)  # ... nor A's value
    assert value_a == utility.with_dataset(train)(subset)
    # The seed's defect, ruled out: a utility whose data changed is another function.


def test_fingerprint_follows_content_not_labels() -> None:
    train, test = make_data()
    u = make_utility(test)
    sig = utility_fingerprint(u.with_dataset(train))
    x, y = train.data()
    renamed = Dataset(
        x,
        y,
        feature_names=[f"f{i}" for i in range(x.shape[1])],
        data_names=[f"p{i}" for i in range(len(x))],
        description="renamed",
    )
    assert utility_fingerprint(u.with_dataset(renamed)) == sig  # names are labels only
    assert utility_fingerprint(make_utility(test).with_dataset(train)) == sig  # rebuilt
    changed = [
        make_utility(test, C=0.5),  # model parameter
        ModelUtility(
            LogisticRegression(), SupervisedScorer("balanced_accuracy", test, 0.0, (0.0, 1.0))
        ),  # scorer
        make_utility(make_data(seed=1)[1]),  # test data
        ModelUtility(LogisticRegression(), u.scorer, catch_errors=False),  # settings
    ]
    sigs = {utility_fingerprint(c.with_dataset(train)) for c in changed}
    assert len(sigs) == len(changed) and sig not in sigs


def test_an_unencodable_model_asks_for_a_signature(mc: MemcachedBackend) -> None:
    class Opaque:
        __slots__ = ("w",)

        def __init__(self) -> None:
            self.w = 1

        def fit(self, x: Any, y: Any) -> Opaque:
            return self

    train, test = make_data()
    u = ModelUtility(Opaque(), SupervisedScorer("accuracy", test, 0.0), clone_before_fit=False)
    with pytest.raises(KeyEncodingError, match="signature="):
        cached(u, mc).with_dataset(train)
    a = cached(u, mc, signature=b"opaque-v1").with_dataset(train)
    b = cached(u, mc, signature=b"opaque-v1").with_dataset(make_data(seed=2)[0])
    assert a.signature != b.signature  # the data is still part of the identity


def test_misuse_is_a_clear_error(mc: MemcachedBackend) -> None:
    train, test = make_data()
    cu = cached(make_utility(test), mc)
    with pytest.raises(ConfigError, match="with_dataset"):
        cu(Sample(None, np.arange(3)))
    with pytest.raises(ConfigError, match="already cached"):
        CachedUtility(cu, lambda fn, sig: None, ledger=cu.ledger)  # type: ignore[arg-type,return-value]
    worker_copy = pickle.loads(pickle.dumps(cu.with_dataset(train)))
    with pytest.raises(ConfigError, match="worker"):
        worker_copy.with_dataset(train)
    with pytest.raises(ConfigError, match="memoizer"):
        cached_utility(make_utility(test), mc, memoizer=lambda f, s: None, time_threshold=0)  # type: ignore[arg-type,return-value]


# --------------------------------------------------------------------- values
def _tmc(utility: Any, n_jobs: int = 1, updates: int = 4) -> np.ndarray[Any, Any]:
    method = TMCShapleyValuation(utility, is_done=MaxUpdates(updates), seed=11)
    with parallel_config(n_jobs=n_jobs):
        method.fit(make_data()[0])
    return method.result.values


def _msr(utility: Any) -> np.ndarray[Any, Any]:
    method = MSRBanzhafValuation(utility, is_done=MaxUpdates(20), batch_size=4, seed=5)
    method.fit(make_data()[0])
    return method.result.values


@pytest.mark.parametrize("run", [_tmc, _msr], ids=["tmc_shapley", "msr_banzhaf"])
def test_cached_values_equal_uncached_and_a_second_run_evaluates_nothing(
    mc: MemcachedBackend, run: Any
) -> None:
    _, test = make_data()
    utility = make_utility(test)
    plain = run(utility)  # pyDVL alone
    off = run(cached(utility, NullBackend()))  # expcache wrapper, caching off
    first = cached(utility, mc)
    cold = run(first)
    second = cached(make_utility(test), mc)  # rebuilt: same content, same entries
    warm = run(second)
    assert np.array_equal(plain, off)
    assert np.array_equal(plain, cold)
    assert np.array_equal(plain, warm)
    assert first.stats.misses > 0 and first.stats.sets == first.stats.misses
    # Failed fits (one-class subsets) are never stored: only they are evaluated again.
    assert second.stats.misses == 0 and second.stats.evaluations == second.stats.failed
    assert second.stats.failed == first.stats.failed
    assert second.stats.hits == first.stats.calls - first.stats.failed > 0


def test_an_identical_utility_in_another_process_shares_entries(
    mc: MemcachedBackend, memcached: Any
) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_pydvl import make_data, make_utility, cached
        from expcache.backends import MemcachedBackend
        from pydvl.valuation import LOOValuation
        train, test = make_data()
        cu = cached(make_utility(test), MemcachedBackend([{memcached.address!r}]))
        method = LOOValuation(cu).fit(train)
        print(json.dumps({{"sig": method.utility.signature.hex(), **cu.stats.as_dict()}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["misses"] == N_TRAIN + 1  # u(N) and the N leave-one-out sets
    train, test = make_data()
    cu = cached(make_utility(test), mc)
    bound = LOOValuation(cu).fit(train).utility  # fit() binds a copy to the data
    assert bound.signature is not None and bound.signature.hex() == child["sig"]
    assert (cu.stats.hits, cu.stats.misses) == (N_TRAIN + 1, 0)


def test_a_stochastic_model_is_averaged_under_the_repetition_policy(mc: MemcachedBackend) -> None:
    train, test = make_data()
    scorer = SupervisedScorer("accuracy", test, 0.0, (0.0, 1.0))
    sgd = ModelUtility(
        SGDClassifier(random_state=None, max_iter=5, tol=None), scorer, show_warnings=False
    )
    # min = max = 4: the cap is the only way to stop. (With min 3 and rtol 0, three equal
    # scores -- stderr exactly 0, frequent for SGD on tiny data -- would legitimately stop.)
    policy = RepetitionPolicy(min_repetitions=4, rtol_stderr=0.0, max_repetitions=4)
    cu = cached_utility(sgd, mc, repeat=policy).with_dataset(train)
    sample = Sample(None, np.arange(N_TRAIN))
    for _ in range(6):
        cu(sample)
    s = cu.stats
    assert (s.misses, s.repeats, s.hits) == (1, 3, 2)  # 4 samples, then the mean is served
    assert s.calls == 6 and s.evaluations == 4


# --------------------------------------------------------------------- workers
def test_parallel_workers_share_the_cache_and_their_counts_reach_the_run(
    mc: MemcachedBackend,
) -> None:
    train, test = make_data()
    first = cached(make_utility(test), mc)
    with parallel_config(n_jobs=2):
        bound = LOOValuation(first).fit(train).utility
    local = first.ledger.local_stats()
    workers, processes, complete = first.ledger.worker_stats()
    assert local.calls == 1  # only u(N), computed in the parent by the strategy's setup
    assert workers.calls == N_TRAIN and processes >= 1 and complete
    total = first.stats
    assert (total.calls, total.misses, total.sets, total.hits) == (N_TRAIN + 1,) * 3 + (0,)
    # Every counted set is an entry: u(N) and the N leave-one-out sets are all stored.
    everyone = np.arange(N_TRAIN)
    loo_keys = [bound.cache_key(Sample(None, np.delete(everyone, i))) for i in everyone]
    keys = [bound.cache_key(Sample(None, everyone)), *loo_keys]
    assert len(mc.get_many(keys)) == len(set(keys)) == N_TRAIN + 1
    second = cached(make_utility(test), mc)
    with parallel_config(n_jobs=2):
        LOOValuation(second).fit(train)
    workers, _, _ = second.ledger.worker_stats()
    assert workers.hits == N_TRAIN and workers.misses == 0  # the workers' hits, in the run
    assert second.stats.hits == N_TRAIN + 1
    assert second.stats.saved_seconds > 0


@pytest.mark.filterwarnings("ignore:.*tasks which were still being processed:UserWarning")
def test_interrupted_parallel_sampling_still_reconciles(mc: MemcachedBackend) -> None:
    """TMC stops early and pyDVL kills the busy workers: counts must still add up."""
    _, test = make_data()
    for run in ("cold", "warm"):
        cu = cached(make_utility(test), mc)
        _tmc(cu, n_jobs=2, updates=3)
        s = cu.stats
        workers, processes, complete = cu.ledger.worker_stats()
        assert complete and processes >= 1 and workers.calls > 0
        assert (
            s.calls
            == s.hits + s.misses + s.repeats + s.failed
            == cu.ledger.local_stats().calls + workers.calls
        )
        assert s.sets == s.misses  # every evaluation on record was stored (threshold 0)
        if run == "warm":  # the same permutations: the workers answer from the cache
            assert workers.hits > 0 and s.hits >= s.calls - 2 * N_TRAIN


def test_workers_report_through_the_backend_when_the_directory_is_elsewhere(
    mc: MemcachedBackend, tmp_path: Path
) -> None:
    train, test = make_data()
    ledger_dir = tmp_path / "not-on-the-worker-host"
    cu = cached(make_utility(test), mc, stats_dir=str(ledger_dir))
    ledger_dir.rmdir()  # what a worker on another machine sees: no such directory
    with parallel_config(n_jobs=2):
        LOOValuation(cu).fit(train)
    workers, processes, complete = cu.ledger.worker_stats()
    assert complete and processes >= 1
    assert workers.calls == N_TRAIN and cu.stats.misses == N_TRAIN + 1


def test_a_worker_on_another_host_never_reports_into_that_host_s_disk_cache(
    tmp_path: Path,
) -> None:
    """A disk cache is one host's own: a worker elsewhere that wrote its counts there would
    look reported to itself and be missing from the run's totals, which said complete."""
    disk = DiskBackend(tmp_path / "cache")
    missing = tmp_path / "the-owner-s-ledger"
    with pytest.raises(OSError, match="not shared between hosts"):
        ledger_module._open_sink("run", missing, "auto", disk)


def test_a_killed_worker_keeps_the_calls_it_completed(tmp_path: Path) -> None:
    """Snapshots are written after every call: a SIGKILL loses nothing already returned."""
    train, test = make_data()
    cu = cached(make_utility(test), MemoryBackend()).with_dataset(train)
    shipped = tmp_path / "utility.pkl"
    shipped.write_bytes(pickle.dumps(cu))
    script = textwrap.dedent(
        f"""
        import os, pickle, signal, warnings
        import numpy as np
        warnings.simplefilter("ignore")
        from pydvl.valuation.types import Sample
        cu = pickle.loads(open({str(shipped)!r}, "rb").read())
        for k in (3, 4, 5, 3):
            cu(Sample(None, np.arange(k)))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    workers, processes, complete = cu.ledger.worker_stats()
    assert (processes, complete) == (1, True)
    assert (workers.calls, workers.misses, workers.hits) == (4, 3, 1)
    assert cu.stats.calls == 4  # the parent made no call itself


def test_the_ledger_cleans_up_and_rejects_bad_channels(tmp_path: Path) -> None:
    ledger = RunLedger(MemoryBackend())
    assert ledger.directory.is_dir()
    ledger.close()
    assert not ledger.directory.exists()
    # Dropping the last copy of a utility releases its memoizers (and the data they hold).
    train, test = make_data()
    cu = cached(make_utility(test), MemoryBackend()).with_dataset(train)
    run_id, directory = cu.ledger.run_id, cu.ledger.directory
    assert run_id in ledger_module._PARTS
    del cu
    gc.collect()
    assert run_id not in ledger_module._PARTS and not directory.exists()
    with pytest.raises(ConfigError, match="stats_channel"):
        RunLedger(MemoryBackend(), channel="carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="shared"):
        RunLedger(MemoryBackend(), channel="backend")
    kept = RunLedger(MemoryBackend(), directory=tmp_path / "ledger")
    kept.close()
    assert (tmp_path / "ledger").is_dir()  # a directory we were given is not ours to delete
    assert os.listdir(tmp_path / "ledger") == []
