"""What the valuation task prints: a progress bar that fits 120 columns, a summary with
standard errors and an honest time-saved line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from expcache.stats import CacheStats

from .helpers import CONF

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.usefixtures("need_pydvl"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
# pyDVL's bar format (pydvl.utils.progress.Progress), with the widest numbers it shows.
BAR = "{desc}: {percentage:0.2f}%|{bar}| [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


@pytest.mark.parametrize("option", METHODS)
def test_the_progress_bar_and_its_eta_fit_120_columns(option: str) -> None:
    from tqdm import tqdm

    from expcache.app import nodes
    from expcache.app.tasks.valuation import methods

    node = OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{option}.yaml"))
    assert isinstance(node, dict)
    node.pop("defaults", None)
    is_done = methods.stopping(node["is_done"]) if "is_done" in node else None
    desc = methods.describe(nodes.target(node), 100_000, is_done)
    assert len(desc) <= 48 and "points" in desc
    line = tqdm.format_meter(
        n=99.99, total=100, elapsed=35999, ncols=120, prefix=desc, unit="%", bar_format=BAR,
        rate=0.001,
    )
    assert len(line) <= 120, line
    assert "<" in line  # the ETA is on the line


def test_a_long_budget_is_shortened() -> None:
    from pydvl.valuation.methods import TMCShapleyValuation
    from pydvl.valuation.stopping import HistoryDeviation, MaxTime, MaxUpdates

    from expcache.app.tasks.valuation.methods import describe

    budget = MaxUpdates(100) | MaxTime(3600) | HistoryDeviation(50, 1e-3)
    text = describe(TMCShapleyValuation, 100, budget)
    assert len(text) == 48 and text.startswith("TMCShapley, 100 points, MaxUpdates(100)|")


def _table() -> object:
    from expcache.app.tasks.valuation.report import PointValue, ValueTable

    rows = [
        PointValue(i, str(100 + i), v, e, 3, 0, False)
        for i, (v, e) in enumerate([(0.5, 0.01), (-0.25, math.nan), (0.125, 0.02)])
    ]
    return ValueTable(rows, "m")


def test_the_summary_shows_standard_errors_and_says_when_no_time_was_saved() -> None:
    from expcache.app.tasks.valuation.report import Saving, format_summary

    table = _table()
    cheap = CacheStats(hits=90, misses=10, compute_seconds=0.01, saved_seconds=0.09)
    saving = Saving.of(cheap, call_seconds=0.4)  # lookups cost more than the computing
    text = format_summary(
        table, cheap, title="t", top_k=3, seconds={"total": 1, "setup": 0, "fit": 1},  # type: ignore[arg-type]
        workers=0, saving=saving,
    )
    assert "stderr" in text.splitlines()[2]
    assert "0.01000" in text and "0.02000" in text  # per-point standard errors
    assert "no time saved" in text and "saved 0" not in text
    assert "worker process" not in text  # only with workers, or task.verbose
    assert all(len(line) <= 100 for line in text.splitlines())
    assert table.summary(3)["mean_stderr"] == pytest.approx(0.015)  # type: ignore[attr-defined]

    fast = Saving.of(CacheStats(hits=90, misses=10, compute_seconds=1, saved_seconds=9), 1.5)
    assert fast.seconds == pytest.approx(8.5)
    assert fast.describe(90).startswith("time saved 8.50 s")
    assert Saving.of(CacheStats(misses=3, compute_seconds=1), 1.2).describe(0).startswith(
        "no hits, no time saved"
    )


def test_results_list_what_an_objective_can_name(tmp_path: Path) -> None:
    from expcache.app.tasks.valuation.task import RESULT_KEYS, check_objective

    assert check_objective("values.top.0.value", RESULT_KEYS) == "values.top.0.value"
    assert check_objective(None) is None
