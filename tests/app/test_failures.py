"""Failed evaluations are never cached: through the ``expcache`` command and in-process.

A failing fit gets pyDVL's default score (as it would without the cache), is counted in
``failed`` and never stored, so a second run evaluates exactly the failed subsets again; a
model that cannot be fitted at all fails at setup naming the parameter; a run where every
evaluation (or more than ``task.max_failed_fraction`` of them) failed fails with the first
error. ``estimators.LoggedClassifier`` logs every fit, so the tests see which subsets were
evaluated, not only how many.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache.backends import MemoryBackend
from expcache.errors import KeyEncodingError

from .helpers import REPO, error_text, expcache, names_key, read

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.usefixtures("need_pydvl"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

# 12 iris points (3 classes), TMC with 3 updates per point: ~30 calls, some of them on
# one-class prefixes of a permutation, which LogisticRegression cannot fit.
TINY = ("data=iris", "data.train_size=12", "method.is_done.n_updates=3", "task.plot=false")
LOGGED = "model._target_=tests.app.estimators.LoggedClassifier"
ENV = {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}


def _run(tmp_path: Path, out: str, *args: str) -> tuple[Any, Path]:
    run_dir = tmp_path / out
    proc = expcache(*TINY, *args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=ENV)
    return proc, run_dir


@pytest.mark.slow
def test_a_second_run_evaluates_exactly_the_failed_subsets(tmp_path: Path) -> None:
    log = tmp_path / "fits.log"
    cold_proc, cold = _run(tmp_path, "cold", LOGGED, f"model.log={log}")
    assert cold_proc.returncode == 0, cold_proc.stderr[-3000:]
    cold_fits = [f for f in _fits(log) if f[1] < 12]  # not the whole-set check at setup
    failed = {d for status, _, d in cold_fits if status == "fail"}
    assert failed, "the test needs some one-class subsets"
    assert len(failed) < len({d for _, _, d in cold_fits})  # ... and some that fit
    cold_stats = read(cold / "cache_stats.json")["total"]
    assert cold_stats["failed"] >= len(failed) > 0
    assert cold_stats["sets"] == cold_stats["misses"]  # every success stored, no failure
    assert "failed: given the default score, not cached" in cold_proc.stdout
    assert "first error: ValueError" in cold_proc.stdout
    # pyDVL's INFO chatter and the empty worker line stay off by default
    assert "Computing total utility" not in cold_proc.stdout + cold_proc.stderr
    assert "worker process" not in cold_proc.stdout

    log.unlink()
    warm_proc, warm = _run(tmp_path, "warm", LOGGED, f"model.log={log}")
    assert warm_proc.returncode == 0, warm_proc.stderr[-3000:]
    warm_fits = [f for f in _fits(log) if f[1] < 12]
    # Exactly the failed subsets were evaluated again, and they failed again; nothing else.
    assert {d for _, _, d in warm_fits} == failed
    assert all(status == "fail" for status, _, _ in warm_fits)
    warm_stats = read(warm / "cache_stats.json")["total"]
    assert warm_stats["misses"] == warm_stats["sets"] == 0
    assert warm_stats["failed"] == cold_stats["failed"] == warm_stats["evaluations"]
    assert warm_stats["calls"] == cold_stats["calls"]
    # The failed subsets got the scorer's default in both runs: the values are identical.
    assert (warm / "values.csv").read_bytes() == (cold / "values.csv").read_bytes()

    # A tolerance below the failure rate fails the run, naming the option and the cause.
    strict_proc, strict = _run(
        tmp_path, "strict", "task.max_failed_fraction=0", "task.verbose=true"
    )
    assert strict_proc.returncode != 0
    assert "Computing total utility" in strict_proc.stdout + strict_proc.stderr  # asked for
    text = error_text(strict_proc.stderr)
    assert "task.max_failed_fraction=0" in text and "only one class" in text
    assert "Traceback" not in strict_proc.stderr
    assert read(strict / "cache_stats.json")["status"] == "failed"


def _fits(path: Path) -> list[tuple[str, int, str]]:
    from .estimators import read_log

    return read_log(path)


@pytest.mark.slow
def test_a_model_that_cannot_be_fitted_fails_at_setup_naming_the_key(tmp_path: Path) -> None:
    # scikit-learn accepts penalty=l1 alone; only fitting with the default lbfgs solver fails.
    proc, run_dir = _run(tmp_path, "l1", "data=wine", "model.penalty=l1")
    assert proc.returncode != 0
    text = error_text(proc.stderr)
    assert names_key(text, "model.penalty") and "lbfgs" in text
    assert "Traceback" not in proc.stderr
    stats = read(run_dir / "cache_stats.json")
    assert stats["status"] == "failed" and stats["total"]["calls"] == 0  # before any work
    # A value scikit-learn's own constraints reject is caught even earlier, by the plan.
    proc = expcache("data=wine", "model.C=-1", f"hydra.run.dir={tmp_path / 'c'}", cwd=tmp_path)
    assert proc.returncode != 0 and names_key(error_text(proc.stderr), "model.C")


@pytest.mark.slow
def test_every_evaluation_failing_fails_the_run_and_stores_nothing(tmp_path: Path) -> None:
    proc, run_dir = _run(tmp_path, "all", "model.penalty=l1", "task.check_model=false")
    assert proc.returncode != 0
    text = error_text(proc.stderr)
    assert "every one of the" in text and "utility evaluations failed" in text
    assert "Solver lbfgs supports only" in text  # the first error, shown
    stats = read(run_dir / "cache_stats.json")
    assert stats["status"] == "failed"
    total = stats["total"]
    assert total["failed"] == total["calls"] > 0
    assert total["sets"] == 0 and total["misses"] == 0
    assert not (run_dir / "values.csv").exists()


# --------------------------------------------------------------------------- in-process
def _utility(**kwargs: Any) -> Any:
    from pydvl.valuation import ModelUtility, SupervisedScorer
    from sklearn.linear_model import LogisticRegression

    from expcache.app.tasks.valuation.builders import SklearnData

    data = SklearnData("iris", train_size=12).load()
    scorer = SupervisedScorer("accuracy", data.test, default=0.25, range=(0.0, 1.0))
    return ModelUtility(LogisticRegression(), scorer, show_warnings=False, **kwargs), data


def test_cached_utility_gives_the_default_and_stores_nothing() -> None:
    from pydvl.valuation.types import Sample

    from expcache.integrations.pydvl import cached_utility

    utility, data = _utility()  # pyDVL's default: catch_errors=True
    labels = data.train.data().y
    one_class = np.flatnonzero(labels == labels[0])[:2]
    backend = MemoryBackend()
    cu = cached_utility(utility, backend, time_threshold=0).with_dataset(data.train)
    assert cu(Sample(None, one_class)) == 0.25 == cu(Sample(None, one_class[::-1]))
    both = np.array([one_class[0], int(np.flatnonzero(labels != labels[0])[0])])
    good = cu(Sample(None, both))
    stats = cu.stats
    assert (stats.failed, stats.misses, stats.sets, stats.hits) == (2, 1, 1, 0)
    values = [k for k in backend.iter_keys() if not k.endswith(":manifest")]
    assert len(values) == 1  # only the successful evaluation (+ the identity manifest)
    assert not cu.memoized.check_call_in_cache(np.sort(one_class), None)
    assert cu(Sample(None, both)) == good and cu.stats.hits == 1
    report = cu.report()
    assert report.first_error is not None and report.first_error.startswith("ValueError")
    assert report.call_seconds > 0
    assert utility.catch_errors is True  # the user's utility is left as it was
    cu.ledger.close()


def test_catch_errors_false_raises_and_cache_errors_are_not_default_scores() -> None:
    from pydvl.valuation.types import Sample

    from expcache.integrations.pydvl import cached_utility

    utility, data = _utility(catch_errors=False)
    cu = cached_utility(utility, MemoryBackend(), time_threshold=0).with_dataset(data.train)
    labels = data.train.data().y
    with pytest.raises(ValueError, match="class"):
        cu(Sample(None, np.flatnonzero(labels == labels[0])[:2]))
    assert cu.stats.failed == 1 and cu.stats.sets == 0
    cu.ledger.close()

    # A key that cannot be encoded is the cache's problem: raised, never a default score.
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Odd(Sample):
        extra: object = None

    caught, _ = _utility()
    cu = cached_utility(caught, MemoryBackend(), time_threshold=0).with_dataset(data.train)
    with pytest.raises(KeyEncodingError):
        cu(Odd(None, np.array([0, 1, 2]), extra=io.StringIO()))
    assert cu.stats.failed == 0
    cu.ledger.close()


def test_a_failure_in_a_worker_process_reaches_the_report(tmp_path: Path) -> None:
    """joblib workers count failures in the ledger and leave their first error beside it."""
    from joblib import Parallel, delayed
    from pydvl.valuation.types import Sample

    from expcache.backends import DiskBackend
    from expcache.integrations.pydvl import cached_utility

    utility, data = _utility()
    labels = data.train.data().y
    cu = cached_utility(utility, DiskBackend(str(tmp_path / "c")), time_threshold=0)
    cu = cu.with_dataset(data.train)
    one = np.flatnonzero(labels == labels[0])
    subsets = [one[:1], one[:2], np.arange(6)]
    values = Parallel(n_jobs=2, backend="loky")(
        delayed(_call)(cu, Sample(None, s)) for s in subsets
    )
    assert values[:2] == [0.25, 0.25]
    stats = cu.stats
    assert stats.failed == 2 and stats.misses == 1
    report = cu.report()
    assert report.first_error is not None and "class" in report.first_error
    assert report.call_seconds > 0
    cu.ledger.close()
    assert os.path.exists(tmp_path / "c")


def _call(cu: Any, sample: Any) -> float:
    return float(cu(sample))
