"""Multiruns of the installed script against a real memcached, with both launchers.

The 2x2 sweep is ``seed=0,1 x policy.lease=true,false``: the lease switch does not enter the
key, so with the basic launcher (jobs in order) the exact counts are known -- job 0 computes
its 20 subsets, job 1 (same seed) hits all 20, job 2 (seed 1) hits the 10 subsets shared by
every seed, job 3 hits all 20. With the joblib launcher jobs run two at a time, so only bounds
hold, but every job must leave its files and the summary must add up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from expcache.app.records import PLOT_FILE, RESULTS_FILE, STATS_FILE, SUMMARY_FILE

from .helpers import SCRIPT, error_text, expcache, names_key

pytestmark = [pytest.mark.slow, pytest.mark.memcached]

N_SUBSETS, N_SHARED = 20, 10


def _sweep(tmp_path: Path, memcached: Any, *extra: str) -> tuple[Path, dict[str, Any]]:
    sweep = tmp_path / "sweep"
    proc = expcache(
        "-m",
        "task=demo",
        "seed=0,1",
        "policy.lease=true,false",
        "cache=memcached",
        f"cache.servers=[{memcached.address}]",
        "cache.namespace=sweeptest",
        "policy.time_threshold=0",  # store everything: counts must not depend on timing
        f"task.n_subsets={N_SUBSETS}",
        f"task.shared_fraction={N_SHARED / N_SUBSETS}",
        f"hydra.sweep.dir={sweep}",
        *extra,
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((sweep / SUMMARY_FILE).read_text())
    _check_finish(sweep, summary, proc.stdout)
    return sweep, summary


def _check_finish(sweep: Path, summary: dict[str, Any], stdout: str) -> None:
    """The end of a sweep: a table in the terminal, sweep.png beside the summary, no lock."""
    assert f"expcache: sweep {sweep}" in stdout
    table = stdout.split(f"expcache: sweep {sweep}", 1)[1]
    for head in ("job", "status", "calls", "hits", "rate", "evals", "failed", "time", "saved"):
        assert head in table.splitlines()[1], head
    total = summary["total"]
    assert (
        f"{summary['n_jobs']} jobs ({summary['n_failed']} failed): {total['calls']} calls, "
        f"{total['hits']} hits"
    ) in table
    rows = {line[:4].strip(): line for line in table.splitlines()[3:] if line[:4].strip().isdigit()}
    for job in summary["jobs"]:  # one row per job, with its own counts (fixed columns)
        row = rows[str(job["job"]["num"])]
        assert row[43:53].strip() == job["status"]
        assert (row[53:60].strip(), row[60:67].strip()) == (
            str(job["total"]["calls"]),
            str(job["total"]["hits"]),
        )
    assert (sweep / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".")) == []
    assert all(j["seconds"] > 0 for j in summary["jobs"])


def _jobs(sweep: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for num in range(4):
        job = sweep / str(num)
        assert (job / ".hydra" / "config.yaml").is_file()
        out.append(
            (
                json.loads((job / STATS_FILE).read_text()),
                json.loads((job / RESULTS_FILE).read_text()),
            )
        )
    return out


def _check_common(
    sweep: Path, summary: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    jobs = _jobs(sweep)
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (4, 4, 0)
    assert [j["job"]["num"] for j in summary["jobs"]] == [0, 1, 2, 3]
    for (stats, results), entry in zip(jobs, summary["jobs"], strict=True):
        assert stats["status"] == "completed"
        assert stats["seed"] == results["seed"] == entry["seed"]
        assert stats["backend"]["servers"]
        assert stats["total"]["calls"] == N_SUBSETS
        assert entry["total"] == stats["total"]
    assert summary["total"]["calls"] == 4 * N_SUBSETS
    assert summary["total"]["hits"] == sum(s["total"]["hits"] for s, _ in jobs)
    assert summary["functions"]["utility"]["calls"] == 4 * N_SUBSETS
    # a hit returns exactly what was computed: the shared subsets agree in every job
    shared = [r["utilities"][:N_SHARED] for _, r in jobs]
    assert all(values == shared[0] for values in shared)
    return jobs


def test_sweep_with_the_basic_launcher(tmp_path: Path, memcached: Any) -> None:
    assert SCRIPT.exists()
    sweep, summary = _sweep(tmp_path, memcached)
    jobs = _check_common(sweep, summary)
    counts = [(s["total"]["hits"], s["total"]["misses"]) for s, _ in jobs]
    assert counts == [(0, 20), (20, 0), (N_SHARED, 20 - N_SHARED), (20, 0)]
    assert [s["seed"] for s, _ in jobs] == [0, 0, 1, 1]
    assert memcached.stat("curr_items") >= 30  # 30 distinct subsets stored on the server


def test_sweep_with_the_joblib_launcher_shares_one_server(tmp_path: Path, memcached: Any) -> None:
    sweep, summary = _sweep(tmp_path, memcached, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    jobs = _check_common(sweep, summary)
    # 30 distinct subsets: at least 30 computations in all; at most 2 jobs run at once, so
    # the third job to start began after one finished and found at least the shared subsets.
    assert summary["total"]["misses"] >= 30
    assert summary["total"]["hits"] >= N_SHARED
    assert len({s["job"]["num"] for s, _ in jobs}) == 4


def test_a_failing_job_still_leaves_every_record_and_the_summary(tmp_path: Path) -> None:
    """on_multirun_end is skipped when a job fails: the jobs themselves keep the summary."""
    sweep = tmp_path / "sweep"
    proc = expcache(
        "-m",
        "task=demo",
        "cache=memory",
        "policy=stochastic",
        "policy.min_repetitions=1,0",
        "task.n_subsets=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert names_key(error_text(proc.stderr), "policy.min_repetitions") and ">= 1" in proc.stderr
    good = json.loads((sweep / "0" / STATS_FILE).read_text())
    bad = json.loads((sweep / "1" / STATS_FILE).read_text())
    assert good["status"] == "completed"
    assert good["total"]["calls"] == 3
    assert bad["status"] == "failed"
    assert "min_repetitions=0" in bad["error"]
    summary = json.loads((sweep / SUMMARY_FILE).read_text())
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (2, 1, 1)
    assert summary["total"]["calls"] == 3
    # Hydra skipped on_multirun_end: the launcher's exit still printed the table and the plot.
    _check_finish(sweep, summary, proc.stdout)
