"""Every job's summary at the end of a sweep (``expcache.app.cluster``): from the job files,
in job order, named by what sets each job apart; also when a failed job makes Hydra skip
``on_multirun_end``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expcache.app.cluster import job_summaries
from expcache.app.records import RESULTS_FILE, STATS_FILE

from .helpers import expcache


def _job(root: Path, num: int, status: str, overrides: list[str], **extra: object) -> Path:
    folder = root / str(num)
    folder.mkdir(parents=True)
    record = {
        "status": status,
        "error": None
        if status == "completed"
        else "ConfigError: task.n_subsets=0: an integer >= 1",
        "job": {"num": num, "overrides": overrides},
        "backend": {"backend": "memcached"},
        "total": {"calls": 10 * (num + 1), "hits": num, "misses": 10 * (num + 1) - num, "sets": 3},
        **extra,
    }
    (folder / STATS_FILE).write_text(json.dumps(record))
    return folder


def test_one_block_per_job_in_job_order_from_the_files(tmp_path: Path) -> None:
    for num in (10, 2, 0):  # folders sorted as text would put 10 before 2
        _job(tmp_path, num, "completed", ["task=demo", f"seed={num}"])
    results = {
        "method": "Leave-One-Out",
        "data": "iris",
        "values": {"top": [{"name": "7", "value": 0.5}], "bottom": [{"name": "3", "value": -0.25}]},
        "seconds": {"total": 1.5},
        "cache": {"worker_processes": 3},
    }
    (tmp_path / "2" / RESULTS_FILE).write_text(json.dumps(results))
    (tmp_path / "11").mkdir()
    (tmp_path / "11" / STATS_FILE).write_text("{not json")
    text = job_summaries(tmp_path).splitlines()
    assert text[0] == f"expcache: 4 job(s) in {tmp_path} (1 not completed)"
    heads = [line for line in text if line.startswith("#")]
    assert heads[:3] == [
        "#0 seed=0: completed, 10 calls: 0 hits, 10 misses, 0 repeats, 3 stored (memcached)",
        "#2 seed=2: completed, 30 calls: 2 hits, 28 misses, 0 repeats, 3 stored (memcached)",
        "#10 seed=10: completed, 110 calls: 10 hits, 100 misses, 0 repeats, 3 stored (memcached)",
    ]
    assert heads[3].startswith("#? 11: unreadable cache_stats.json")
    assert "    Leave-One-Out on iris: top 7 (0.5000); bottom 3 (-0.2500)" in text
    assert "    1.50 s, 3 worker process(es) reported" in text


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_still_prints_every_job(tmp_path: Path) -> None:
    """Hydra skips on_multirun_end when a job fails: the summaries come at exit instead."""
    sweep = tmp_path / "sweep"
    proc = expcache(
        "-m",
        "task=demo",
        "cache=memory",
        "task.n_subsets=3,0",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    block = proc.stdout[proc.stdout.index("expcache: 2 job(s) in") :].splitlines()
    assert block[0] == f"expcache: 2 job(s) in {sweep} (1 not completed)"
    assert block[1].startswith("#0 task.n_subsets=3: completed, 3 calls:")
    assert block[3].startswith("#1 task.n_subsets=0: failed: ") and "n_subsets" in block[3]
