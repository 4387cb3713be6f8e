"""``CachedUtility``'s hot path: the fast subset canonicalisation keys every input exactly as
the reference ``_canonical`` does, and the per-process state it caches follows forks.

Keys are the contract with every entry already stored: a fast path that changed one would
silently turn a warm cache cold (or worse, make two subsets share an entry), so equality is
checked against the reference and against golden keys computed with the reference.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():  # pyDVL's import-time deprecation chatter
    warnings.simplefilter("ignore", FutureWarning)
    pytest.importorskip("pydvl", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
    pytest.importorskip("sklearn", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
    from pydvl.valuation import Dataset, ModelUtility, SupervisedScorer

from pydvl.valuation.types import Sample
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from expcache import Memoized
from expcache.backends import MemoryBackend
from expcache.integrations.evaluation import canonical_subset as _canonical
from expcache.integrations.evaluation import subset_key as _subset_key
from expcache.integrations.pydvl import cached_utility

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

INT_DTYPES = [
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.intp, np.longlong, np.ulonglong,
]  # fmt: skip
PERMUTATION = np.random.default_rng(7).permutation(40)

SUBSETS: list[Any] = [
    *(np.array([9, 1, 5, 1, 30], dtype=dt) for dt in INT_DTYPES),  # unsorted, a duplicate
    PERMUTATION[:17],  # what pyDVL's permutation samplers pass: a slice of a permutation
    PERMUTATION[::3],  # a strided view
    np.arange(40)[::-1],  # sorted the other way
    np.array([3, 2, 1], dtype=">i8"),  # big-endian int64: another dtype object
    np.array([3, 2, 1], dtype=">u4"),
    np.array([4]),
    np.asfortranarray(np.array([8, 2, 6])),
    np.array([], dtype=np.int64),
    np.array([]),  # float64 but empty: accepted
    [5, 1, 9, 1],
    (5, 1, 9),
    [np.int32(4), np.int64(2)],
    [],
    (),
    range(6, 0, -1),
]


def _memo() -> Memoized[..., float]:
    def evaluate(subset: Any, extra: Any = None) -> float:
        return 0.0

    return Memoized(evaluate, MemoryBackend(), signature=b"golden-subset-keys", name="golden")


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: f"{type(s).__name__}:{s!r}"[:60])
def test_the_fast_path_keys_every_accepted_input_like_the_reference(subset: Any) -> None:
    reference, fast = _canonical(subset), _subset_key(subset)
    assert fast.dtype == reference.dtype == np.int64
    assert fast.shape == reference.shape and np.array_equal(fast, reference)
    assert fast.flags.c_contiguous and not fast.flags.writeable  # what the utility receives
    memo = _memo()
    assert memo.cache_key(fast, None) == memo.cache_key(reference, None)


def test_the_fast_path_never_aliases_or_mutates_the_caller_s_array() -> None:
    subset = PERMUTATION[:10]
    before = subset.copy()
    out = _subset_key(subset)
    assert not np.shares_memory(out, subset)
    assert np.array_equal(subset, before) and subset.flags.writeable


def test_golden_keys_of_the_reference_encoding() -> None:
    """Computed with the reference path before the fast path existed: any change to either
    path that moves a key fails here."""
    memo = _memo()
    small = "ex3:7d263ba9f3ff:759a541ef19af9fc452902a38af3c063"
    empty = "ex3:7d263ba9f3ff:bb6e023c0495ec631de0a9a8e39fd1a6"
    for subset in ([5, 1, 9], np.array([9, 5, 1]), np.array([5, 1, 9], dtype=np.uint8)):
        assert memo.cache_key(_subset_key(subset), None) == small
    for subset in ([], np.array([], dtype=np.int64)):
        assert memo.cache_key(_subset_key(subset), None) == empty


@pytest.mark.parametrize(
    "subset",
    [np.array([[1, 2]]), np.array([1.0, 2.0]), np.array([True, False]), np.int64(3), ["a"]],
    ids=["2-d", "float", "bool", "scalar", "str"],
)
def test_the_fast_path_rejects_what_the_reference_rejects(subset: Any) -> None:
    with pytest.raises(TypeError) as reference:
        _canonical(subset)
    with pytest.raises(TypeError) as fast:
        _subset_key(subset)
    assert str(fast.value) == str(reference.value)


def _utility() -> Any:
    x, y = make_classification(n_samples=60, n_features=4, n_informative=2, random_state=0)
    train, test = Dataset.from_arrays(
        x, y, train_size=20, random_state=0, stratify_by_target=True
    )
    scorer = SupervisedScorer("accuracy", test, default=0.0, range=(0.0, 1.0))
    utility = ModelUtility(LogisticRegression(), scorer, show_warnings=False)
    return cached_utility(utility, MemoryBackend(), time_threshold=0).with_dataset(train)


def test_cache_key_of_a_sample_is_the_reference_key() -> None:
    cu = _utility()
    sample = Sample(None, PERMUTATION[:12] % 20)
    assert cu.cache_key(sample) == cu.memoized.cache_key(_canonical(sample.subset), None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reports_its_own_calls_to_the_ledger() -> None:
    """The hot path caches this process's ledger part: a forked child (which inherits that
    cache) must still report as a worker, or its calls would be lost from the run."""
    cu = _utility()
    cu(Sample(None, np.arange(12)))  # the parent's hot state exists before the fork
    assert "_hot" in cu.__dict__
    pid = os.fork()
    if pid == 0:  # the child: two calls, then leave without running any cleanup
        code = 1
        try:
            cu(Sample(None, np.arange(14)))
            cu(Sample(None, np.arange(12)))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    workers, processes, complete = cu.ledger.worker_stats()
    assert (processes, complete) == (1, True)
    own = cu.ledger.local_stats()
    assert (own.calls, own.misses) == (1, 1)
    # The child inherits the parent's memoizer, counters included, with the fork: its report
    # holds only what it did itself (one miss, one hit), or the run would count the parent's
    # call twice.
    assert (workers.calls, workers.misses, workers.hits) == (2, 1, 1)
    assert cu.stats.calls == 3
    cu.ledger.close()
