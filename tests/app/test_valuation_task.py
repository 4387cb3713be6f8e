"""The valuation task through the real conf/: composition, validation, files, worker stats.

Runs go through ``expcache.config.run`` (the runner the CLI uses) with the real config groups,
small data and budgets; one smoke test runs the CLI in a subprocess with a tmp output folder.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from expcache.app import CacheContext, MemoPolicy, plan, run
from expcache.app.schemas import all_schemas
from expcache.app.tasks.valuation import ValuationTask
from expcache.backends import MemoryBackend
from expcache.stats import CacheStats

from .conftest import Compose
from .helpers import CONF, SCRIPT, loo_task_params

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.usefixtures("need_pydvl"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

GROUPS = ("data", "model", "scorer", "method", "parallel")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
# Small and fast: 20 training points, a handful of permutations, every evaluation stored.
SMALL = ("data=iris", "data.train_size=20", "policy.time_threshold=0")
TMC3 = "method.is_done.n_updates=3"


@pytest.fixture
def compose_valuation(compose_raw: Compose) -> Compose:
    return lambda *overrides: compose_raw("task=valuation", *overrides)


# --------------------------------------------------------------------- composition
def test_every_group_has_its_options() -> None:
    assert {o for g, o in OPTIONS if g == "data"} == {"iris", "wine", "breast_cancer", "synthetic"}
    assert {o for g, o in OPTIONS if g == "model"} >= {
        "logistic_regression",
        "knn",
        "decision_tree",
        "sgd",
    }
    assert {o for g, o in OPTIONS if g == "method"} >= {"loo", "tmc_shapley", "msr_banzhaf"}
    # data, scorer and parallel have expcache-owned targets: structured schemas
    assert {s.group for s in all_schemas()} >= {"data", "scorer", "parallel"}


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_at_the_root_and_plans(
    compose_valuation: Compose, group: str, option: str
) -> None:
    cfg = compose_valuation(f"{group}={option}")
    assert cfg.task[group] == cfg[group]  # the task points at the root group
    p = plan(cfg)
    assert isinstance(p.task, ValuationTask)
    json.dumps(OmegaConf.to_container(cfg, resolve=True))


def test_open_nodes_take_any_parameter_of_their_target(compose_valuation: Compose) -> None:
    """No ``+`` needed for a model parameter the YAML does not state; the plan checks it."""
    cfg = compose_valuation("model.C=0.5", "model=logistic_regression", "method.seed=3")
    assert (cfg.model.C, cfg.method.seed) == (0.5, 3)
    plan(cfg)


def test_a_valid_run_with_a_small_budget(compose_valuation: Compose, tmp_path: Path) -> None:
    cfg = compose_valuation(*SMALL, TMC3, "cache=none")
    assert run(cfg, output_dir=tmp_path / "ok")["results"]["n_points"] == 20


# --------------------------------------------------------------------- runs
@pytest.mark.memcached
def test_the_task_writes_values_plot_and_results_and_a_second_run_only_hits(
    compose_valuation: Compose, memcached: Any, tmp_path: Path
) -> None:
    cfg = compose_valuation(
        *SMALL,
        TMC3,
        "cache=memcached",
        f"cache.servers=[{memcached.address}]",
        "data.label_noise=0.2",
    )
    first = run(cfg, output_dir=tmp_path / "a")
    second = run(cfg, output_dir=tmp_path / "b")
    out = tmp_path / "a"
    results = first["results"]
    assert json.loads((out / "results.json").read_text()) == results
    assert results["files"] == {"values": "values.csv", "plot": "values.png"}
    assert (out / "values.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "values.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == results["n_points"] == 20
    values = [float(r["value"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert [int(r["rank"]) for r in rows] == list(range(1, 21))
    assert sum(int(r["noisy"]) for r in rows) == results["values"]["noisy_points"] == 4
    assert results["method"] == "Truncated Monte Carlo Shapley"
    assert results["values"]["top"][0]["value"] == values[0]
    cold, warm = (
        first["cache_stats"]["functions"]["pydvl_utility"],
        second["cache_stats"]["functions"]["pydvl_utility"],
    )
    assert cold["misses"] == cold["sets"] == results["cache"]["misses"] > 0
    # failed fits (one-class subsets) are never cached: the second run retries only those
    assert (warm["misses"], warm["hits"]) == (0, cold["calls"] - cold["failed"])
    assert warm["failed"] == warm["evaluations"] == cold["failed"]
    assert warm["saved_seconds"] > 0
    assert second["results"]["values"] == results["values"]  # same seed, same values
    on_disk = json.loads((tmp_path / "b" / "cache_stats.json").read_text())
    assert on_disk["functions"]["pydvl_utility"]["hits"] == cold["calls"] - cold["failed"]


@pytest.mark.memcached
def test_parallel_workers_are_in_cache_stats(
    compose_valuation: Compose, memcached: Any, tmp_path: Path
) -> None:
    cfg = compose_valuation(
        *SMALL,
        "method=loo",
        "parallel.n_jobs=2",
        "cache=memcached",
        f"cache.servers=[{memcached.address}]",
    )
    cold = run(cfg, output_dir=tmp_path / "a")
    warm = run(cfg, output_dir=tmp_path / "b")
    for r in (cold, warm):
        assert r["results"]["cache"]["worker_processes"] >= 1
        assert r["results"]["cache"]["complete"] is True
    c = cold["cache_stats"]["functions"]["pydvl_utility"]
    w = warm["cache_stats"]["functions"]["pydvl_utility"]
    # LOO on 20 points: u(N) in the parent, the 20 leave-one-out sets in the workers.
    assert (c["calls"], c["misses"], c["sets"]) == (21, 21, 21)
    assert (w["calls"], w["hits"], w["misses"]) == (21, 21, 0)
    assert cold["cache_stats"]["total"]["calls"] == 21  # counted once, not twice
    assert memcached.stat("curr_items") >= 21  # (+ short-lived "stored" lease markers)


def knn_utility(scorer: Any, *, k: int) -> Any:
    """A user's own ``utility._target_``: it takes the scorer but brings its own model."""
    from pydvl.valuation import ModelUtility
    from sklearn.neighbors import KNeighborsClassifier

    return ModelUtility(KNeighborsClassifier(n_neighbors=k), scorer, show_warnings=False)


def test_the_task_needs_only_the_context_interface(tmp_path: Path) -> None:
    """Built and called directly, as the runner does, with plain mappings, a bare context and
    a user's own utility callable."""
    ctx = CacheContext(MemoryBackend(), MemoPolicy({"time_threshold": 0}))
    params = loo_task_params(
        utility={"_target_": f"{__name__}.knn_utility", "k": 3}, plot=False
    )
    result = ValuationTask(**params)(ctx=ctx, output_dir=tmp_path, seed=3)
    json.dumps(result)
    assert result["files"] == {"values": "values.csv"}
    assert not (tmp_path / "values.png").exists()
    assert result["method"] == "Leave-One-Out" and result["n_points"] == 12
    assert result["model"] == "KNeighborsClassifier"  # the user's utility was used
    assert ctx.stats("u").calls == result["cache"]["calls"] == 13
    assert isinstance(ctx.stats("u"), CacheStats)


def test_default_job_runs_from_the_command_line(tmp_path: Path) -> None:
    """The console script in a subprocess, small budget, tmp cache and run folder."""
    if not SCRIPT.exists():
        pytest.fail(f"console script not installed next to {sys.executable}: pip install -e .")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    env.update(EXPCACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="1")
    runs = []
    for name in ("cold", "warm"):
        out = tmp_path / name
        proc = subprocess.run(
            [
                str(SCRIPT),
                "task=valuation",
                "data.train_size=30",
                "method.is_done.n_updates=2",
                "policy.time_threshold=0",
                f"hydra.run.dir={out}",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        for file in ("values.csv", "values.png", "results.json", "cache_stats.json"):
            assert (out / file).is_file(), file
        assert "Truncated Monte Carlo Shapley" in proc.stdout and "hits" in proc.stdout
        stats = json.loads((out / "cache_stats.json").read_text())
        assert stats["status"] == "completed"
        runs.append(stats["functions"]["pydvl_utility"])
    cold, warm = runs
    assert cold["misses"] > 0 and warm["misses"] == 0
    assert warm["hits"] == cold["calls"] - cold["failed"] and warm["failed"] == cold["failed"]
