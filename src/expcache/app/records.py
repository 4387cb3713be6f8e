"""The files a run leaves behind, and the sweep summary built from them.

Every job folder gets ``results.json`` (what the task returned) and ``cache_stats.json`` (what
the cache did: counters per memoized callable and in total, backend, policy, seed, status).
A sweep folder gets ``sweep_summary.json``, aggregated from the jobs' ``cache_stats.json``.

Why the summary is rebuilt from files rather than from launcher memory: Hydra skips
``on_multirun_end`` when any job fails, and jobs may run in other processes (joblib). So
each job rebuilds the summary after writing its own file (under a lock, atomically), the
launcher rebuilds it once more at the end, and ``expcache --sweep-summary DIR`` rebuilds it
by hand -- all three produce the same file from the same job files.

A job file that cannot be read or has the wrong shape (not JSON, a list, counters that are not
numbers) never stops the summary: the job is listed as ``unreadable`` with the reason, and
``--sweep-summary`` reports it and exits non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..stats import CacheStats

__all__ = [
    "RESULTS_FILE",
    "STATS_FILE",
    "SUMMARY_FILE",
    "empty_stats_record",
    "read_json",
    "read_record",
    "summarize_sweep",
    "to_jsonable",
    "write_json",
]

RESULTS_FILE = "results.json"
STATS_FILE = "cache_stats.json"
SUMMARY_FILE = "sweep_summary.json"
_LOCK_FILE = ".sweep_summary.lock"


def to_jsonable(value: Any, path: str = "results") -> Any:
    """Plain JSON types from what a task returned (numpy scalars/arrays, tuples, Paths)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), path)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), path)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{path}: a {type(value).__name__} is not JSON-serialisable; tasks must return "
        "plain data (dicts, lists, numbers, strings)"
    )


def write_json(path: Path, data: Any) -> None:
    """Write atomically (temporary file + rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # umask permissions, unlike mkstemp
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def empty_stats_record() -> dict[str, Any]:
    """The counters part of ``cache_stats.json`` for a job that never got to build a cache."""
    return {"backend": None, "policy": None, "functions": {}, "total": CacheStats().as_dict()}


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise summary rebuilds of one sweep across processes (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_COUNTERS = {f.name: f.type for f in dataclasses.fields(CacheStats)}


def _counters(data: Any, where: str) -> CacheStats:
    """``CacheStats`` from a record's counters, or ``ValueError`` saying what is wrong."""
    if data is None:
        return CacheStats()
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object of counters, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for name, kind in _COUNTERS.items():
        if name not in data:
            continue
        value = data[name]
        whole = kind in (int, "int")
        ok = isinstance(value, int) if whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            expected = "an integer" if whole else "a number"
            raise ValueError(f"{where}.{name}: expected {expected}, got {value!r}")
        values[name] = value
    return CacheStats(**values)


def read_record(path: Path) -> dict[str, Any]:
    """A job's ``cache_stats.json``, checked: ``OSError``/``ValueError`` if unusable."""
    record = read_json(path)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    functions = record.get("functions") or {}
    if not isinstance(functions, Mapping):
        raise ValueError(f"functions: expected an object, got {type(functions).__name__}")
    for key in ("job", "backend"):
        if record.get(key) is not None and not isinstance(record[key], Mapping):
            raise ValueError(f"{key}: expected an object, got {type(record[key]).__name__}")
    record["total"] = _counters(record.get("total"), "total")
    record["functions"] = {str(k): _counters(v, f"functions.{k}") for k, v in functions.items()}
    return record


def _job_sort_key(entry: dict[str, Any]) -> tuple[int, str]:
    num = (entry.get("job") or {}).get("num")
    return (num if isinstance(num, int) else 1 << 30, entry["dir"])


def summarize_sweep(sweep_dir: str | os.PathLike[str], *, write: bool = True) -> dict[str, Any]:
    """Aggregate every ``cache_stats.json`` below ``sweep_dir`` into ``sweep_summary.json``.

    Raises ``ConfigError`` if ``sweep_dir`` is not a directory and ``OSError`` if the summary
    cannot be written; a job file that cannot be used is listed (``status: unreadable``).
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError(
            param="sweep_dir",
            value=str(root),
            expected="an existing directory (a sweep folder)",
            hint="a file" if root.exists() else "it does not exist",
        )
    with _locked(root) if write else contextlib.nullcontext():
        jobs: list[dict[str, Any]] = []
        functions: dict[str, CacheStats] = {}
        total = CacheStats()
        for path in sorted(root.rglob(STATS_FILE)):
            rel = str(path.parent.relative_to(root)) or "."
            try:
                record = read_record(path)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                jobs.append({"dir": rel, "status": "unreadable", "error": f"{path}: {reason}"})
                continue
            job_total: CacheStats = record["total"]
            total = total + job_total
            for name, counts in record["functions"].items():
                functions[name] = functions.get(name, CacheStats()) + counts
            jobs.append(
                {
                    "dir": rel,
                    "status": record.get("status"),
                    "error": record.get("error"),
                    "seed": record.get("seed"),
                    "job": record.get("job") or {},
                    "backend": record.get("backend"),
                    "total": job_total.as_dict(),
                }
            )
        jobs.sort(key=_job_sort_key)
        summary = {
            "sweep_dir": str(root.resolve()),
            "n_jobs": len(jobs),
            "n_completed": sum(j["status"] == "completed" for j in jobs),
            "n_failed": sum(j["status"] != "completed" for j in jobs),
            "n_unreadable": sum(j["status"] == "unreadable" for j in jobs),
            "functions": {name: s.as_dict() for name, s in sorted(functions.items())},
            "total": total.as_dict(),
            "jobs": jobs,
        }
        if write:
            write_json(root / SUMMARY_FILE, summary)
        return summary
