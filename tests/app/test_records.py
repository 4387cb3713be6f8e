"""What a run leaves behind: the job records, the callback, and the sweep summary -- also
from malformed sweep folders, which must give a clear message and a failing exit, never a
traceback (in-process and through ``expcache --sweep-summary``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from expcache import ConfigError
from expcache.app import summarize_sweep
from expcache.app.callbacks import CacheStatsCallback, unusable_folder
from expcache.app.records import STATS_FILE, SUMMARY_FILE, to_jsonable, write_json
from expcache.stats import CacheStats

from .helpers import expcache, read


def _job_record(status: str, num: int, hits: int, misses: int) -> dict[str, Any]:
    total = CacheStats(hits=hits, misses=misses).as_dict()
    return {
        "status": status,
        "error": None if status == "completed" else "ConfigError: x",
        "seed": num,
        "job": {"num": num},
        "backend": {"backend": "memory"},
        "functions": {"utility": total},
        "total": total,
    }


def test_a_task_returning_non_json_data_fails_clearly() -> None:
    assert to_jsonable({"a": (1, 2), "b": [1.5]}) == {"a": [1, 2], "b": [1.5]}
    with pytest.raises(TypeError, match=r"results\.b\[0\]: a object is not JSON"):
        to_jsonable({"b": [object()]})


def test_sweep_summary_aggregates_job_files(tmp_path: Path) -> None:
    for num, (status, hits, misses) in enumerate(
        [("completed", 0, 4), ("failed", 0, 0), ("completed", 3, 1)]
    ):
        write_json(tmp_path / str(num) / STATS_FILE, _job_record(status, num, hits, misses))
    summary = summarize_sweep(tmp_path)
    assert read(tmp_path / SUMMARY_FILE) == summary
    assert [j["dir"] for j in summary["jobs"]] == ["0", "1", "2"]
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (3, 2, 1)
    assert summary["n_unreadable"] == 0
    assert summary["total"]["hits"] == 3
    assert summary["total"]["misses"] == 5
    assert summary["functions"]["utility"]["calls"] == 8


# (name, how the job folder is broken, what the reason must say)
Breaker = Callable[[Path], None]


def _write(text: str) -> Breaker:
    return lambda job: (job / STATS_FILE).write_text(text)


def _record(**changes: Any) -> Breaker:
    def breaker(job: Path) -> None:
        record = _job_record("completed", 9, 1, 1)
        record.update(changes)
        (job / STATS_FILE).write_text(json.dumps(record))

    return breaker


def _directory(job: Path) -> None:
    (job / STATS_FILE).mkdir()


MALFORMED: list[tuple[str, Breaker, str]] = [
    ("not-json", _write("{not json"), "Expecting"),
    ("empty-file", _write(""), "Expecting value"),
    ("a-list", _write("[1, 2]"), "expected a JSON object, got list"),
    ("a-number", _write("3"), "expected a JSON object, got int"),
    ("total-a-string", _record(total="many"), "total: expected an object of counters"),
    ("total-hits-a-string", _record(total={"hits": "x"}), "total.hits: expected an integer"),
    ("total-hits-a-float", _record(total={"hits": 1.5}), "total.hits: expected an integer"),
    ("total-hits-a-bool", _record(total={"hits": True}), "total.hits: expected an integer"),
    ("seconds-a-string", _record(total={"compute_seconds": "x"}), "expected a number"),
    ("functions-a-list", _record(functions=[1]), "functions: expected an object"),
    ("function-counts-a-list", _record(functions={"u": [1]}), "functions.u: expected an object"),
    ("job-a-string", _record(job="0"), "job: expected an object"),
    ("a-directory", _directory, "Is a directory"),
]


@pytest.mark.parametrize(("case", "breaker", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_job_file_is_listed_not_fatal(
    tmp_path: Path, case: str, breaker: Breaker, reason: str
) -> None:
    write_json(tmp_path / "0" / STATS_FILE, _job_record("completed", 0, 2, 2))
    (tmp_path / "1").mkdir()
    breaker(tmp_path / "1")
    summary = summarize_sweep(tmp_path)
    bad = [j for j in summary["jobs"] if j["status"] == "unreadable"]
    assert [j["dir"] for j in bad] == ["1"]
    assert reason in bad[0]["error"] and str(tmp_path / "1") in bad[0]["error"]
    assert (summary["n_jobs"], summary["n_unreadable"], summary["n_failed"]) == (2, 1, 1)
    assert summary["total"]["hits"] == 2  # the good job still counts


@pytest.mark.parametrize("case", ["missing", "a-file"])
def test_a_sweep_folder_that_is_not_a_folder_names_it(tmp_path: Path, case: str) -> None:
    path = tmp_path / "sweep"
    if case == "a-file":
        path.write_text("x")
    with pytest.raises(ConfigError) as info:
        summarize_sweep(path)
    assert info.value.param == "sweep_dir"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "breaker", "reason"),
    [m for m in MALFORMED if m[0] in ("not-json", "a-list", "total-hits-a-string", "a-directory")],
    ids=["not-json", "a-list", "total-hits-a-string", "a-directory"],
)
def test_the_flag_reports_a_malformed_job_and_fails(
    tmp_path: Path, case: str, breaker: Breaker, reason: str
) -> None:
    sweep = tmp_path / "sweep"
    write_json(sweep / "0" / STATS_FILE, _job_record("completed", 0, 2, 2))
    (sweep / "1").mkdir()
    breaker(sweep / "1")
    proc = expcache("--sweep-summary", str(sweep), cwd=tmp_path)
    assert proc.returncode == 1
    assert reason in proc.stderr and str(sweep / "1") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 jobs" in proc.stdout
    assert read(sweep / SUMMARY_FILE)["n_unreadable"] == 1


@pytest.mark.slow
def test_the_flag_on_paths_that_are_no_sweep(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full" / SUMMARY_FILE).mkdir(parents=True)  # the summary cannot be written
    write_json(tmp_path / "full" / "0" / STATS_FILE, _job_record("completed", 0, 1, 1))
    for where, code, words in [
        ("afile", 2, "a file"),
        ("missing", 2, "does not exist"),
        ("empty", 1, f"no {STATS_FILE}"),
        ("full", 1, "Is a directory"),
    ]:
        proc = expcache("--sweep-summary", str(tmp_path / where), cwd=tmp_path)
        assert proc.returncode == code, (where, proc.stderr)
        assert words in proc.stderr, (where, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert expcache("--sweep-summary", cwd=tmp_path).returncode == 2  # usage


# -- the callback -------------------------------------------------------------------------------
class _FakeReturn:
    def __init__(self, status: Any, exc: BaseException | None = None) -> None:
        self.status = status
        self._return_value = exc
        self.overrides = ["seed=3"]

    @property
    def return_value(self) -> Any:  # like JobReturn: reading it re-raises a failure
        raise AssertionError("the callback must not re-raise the job's exception")


def _hydra_node(tmp_path: Path, mode: Any) -> DictConfig:
    return OmegaConf.create(
        {
            "seed": 3,
            "hydra": {
                "mode": mode,
                "runtime": {"output_dir": str(tmp_path / "sweep" / "0")},
                "sweep": {"dir": str(tmp_path / "sweep")},
                "run": {"dir": str(tmp_path / "run")},
                "job": {"num": 0},
            },
        }
    )


def test_callback_writes_a_failed_record_when_the_job_left_none(tmp_path: Path) -> None:
    from hydra.core.utils import JobStatus
    from hydra.types import RunMode

    config = _hydra_node(tmp_path, RunMode.MULTIRUN)
    callback = CacheStatsCallback()
    callback.on_job_end(config, _FakeReturn(JobStatus.FAILED, RuntimeError("boom")))  # type: ignore[arg-type]
    record = read(tmp_path / "sweep" / "0" / STATS_FILE)
    assert (record["status"], record["error"], record["seed"]) == (
        "failed",
        "RuntimeError: boom",
        3,
    )
    summary = read(tmp_path / "sweep" / SUMMARY_FILE)
    assert summary["n_failed"] == 1  # written by the job itself: on_multirun_end may never come

    # an existing record (written by run()) is left alone
    write_json(tmp_path / "sweep" / "0" / STATS_FILE, _job_record("completed", 0, 2, 2))
    callback.on_job_end(config, _FakeReturn(JobStatus.COMPLETED))  # type: ignore[arg-type]
    assert read(tmp_path / "sweep" / "0" / STATS_FILE)["total"]["hits"] == 2
    callback.on_multirun_end(config)
    assert read(tmp_path / "sweep" / SUMMARY_FILE)["n_completed"] == 1


def test_callback_stops_a_run_whose_folder_cannot_be_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hydra.types import RunMode

    (tmp_path / "run").write_text("a file where the run folder should go")
    with pytest.raises(SystemExit) as info:
        CacheStatsCallback().on_run_start(_hydra_node(tmp_path, RunMode.RUN))
    assert info.value.code == 1
    assert "hydra.run.dir=" in capsys.readouterr().err
    CacheStatsCallback().on_multirun_start(_hydra_node(tmp_path, RunMode.MULTIRUN))  # fine


def test_unusable_folders() -> None:
    here = Path(__file__)
    assert unusable_folder(here) == "it is a file"
    assert unusable_folder(here / "sub") == f"{here} is a file"
    assert unusable_folder(here.parent / "new" / "deeper") is None
    if os.geteuid() != 0:  # root may write anywhere
        assert unusable_folder(Path("/proc/expcache-test")) is not None
