"""``task.objective``: an optuna sweep over cached valuation runs, through the real script.

Three trials of a tiny leave-one-out valuation with ``model.C`` drawn by optuna (seeded
sampler): every trial returns the float at ``task.objective`` of its own result, and
optuna's best value is the best of those, job by job. A trial repeated with the same value
of C answers from the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from .helpers import error_text, expcache, names_key, read

pytestmark = [pytest.mark.slow, pytest.mark.pydvl, pytest.mark.usefixtures("need_pydvl")]

TINY = ("data=iris", "data.train_size=12", "method=loo", "task.plot=false")


def test_an_optuna_sweep_optimises_the_objective_of_cached_runs(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the sweep extra")
    sweep = tmp_path / "optuna"
    proc = expcache(
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.sampler.seed=7",
        "model.C=choice(0.5,2.0)",  # 3 trials over 2 values: one is a repeat
        "task.objective=values.top.0.value",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    objectives = []
    by_c: dict[float, list[dict[str, object]]] = {}
    for num in range(3):
        stats = read(sweep / str(num) / "cache_stats.json")
        results = read(sweep / str(num) / "results.json")
        assert stats["status"] == "completed"
        assert stats["objective"]["path"] == "values.top.0.value"
        assert stats["objective"]["value"] == results["values"]["top"][0]["value"]
        objectives.append(stats["objective"]["value"])
        c = float(OmegaConf.load(sweep / str(num) / ".hydra" / "config.yaml").model.C)
        by_c.setdefault(c, []).append(stats["total"])
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(objectives)
    repeated = [totals for totals in by_c.values() if len(totals) > 1]
    assert repeated, by_c  # the seeded sampler drew one value twice
    assert repeated[0][1]["misses"] == 0 and repeated[0][1]["hits"] == repeated[0][0]["calls"]
    assert (sweep / "sweep.png").is_file()


def test_an_objective_that_is_not_a_number_names_the_key(tmp_path: Path) -> None:
    proc = expcache(
        *TINY, "task.objective=values.top", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert proc.returncode != 0
    text = error_text(proc.stderr)
    assert names_key(text, "task.objective") and "a finite number" in text
    assert (tmp_path / "run" / "results.json").is_file()  # the work is kept
