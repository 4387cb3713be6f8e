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

Rebuilds are serialised by an ``flock`` on the sweep folder itself, so no lock file is left
in it; where the folder cannot be locked (some network file systems) the rebuild runs
unlocked, which the atomic writes make safe (a summary may briefly miss a job; the launcher's
final rebuild has them all). At the end of a sweep the launcher prints ``format_sweep`` and
writes ``sweep.png`` (``write_sweep_plot``): calls per job split into hits, misses and failed
evaluations, and each job's wall time next to the time its cache saved (measured: see
``CacheContext.timing``).
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
    "PLOT_FILE",
    "RESULTS_FILE",
    "STATS_FILE",
    "SUMMARY_FILE",
    "empty_stats_record",
    "format_sweep",
    "read_json",
    "read_record",
    "summarize_sweep",
    "to_jsonable",
    "write_json",
    "write_sweep_plot",
]

RESULTS_FILE = "results.json"
STATS_FILE = "cache_stats.json"
SUMMARY_FILE = "sweep_summary.json"
PLOT_FILE = "sweep.png"


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
    """Serialise summary rebuilds of one sweep across processes: an ``flock`` on the folder
    itself (POSIX), so nothing is left behind; unlocked where that is impossible."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        # e.g. NFS: flock is emulated by fcntl locks there, which need a writable fd
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
                    "seconds": _number(record.get("seconds")),
                    "time_saved": _number((record.get("timing") or {}).get("time_saved"))
                    if isinstance(record.get("timing"), Mapping)
                    else None,
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
            "seconds": sum(j.get("seconds") or 0.0 for j in jobs),
            "time_saved": _sum_known(j.get("time_saved") for j in jobs),
            "jobs": jobs,
        }
        if write:
            write_json(root / SUMMARY_FILE, summary)
        return summary


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _sum_known(values: Iterator[Any]) -> float | None:
    known = [v for v in values if isinstance(v, float)]
    return sum(known) if known else None


# ----------------------------------------------------------------------------- end of sweep
def _overrides(job: Mapping[str, Any]) -> list[str]:
    found = (job.get("job") or {}).get("overrides") or []
    return [str(o) for o in found] if isinstance(found, list) else []


def _job_label(job: Mapping[str, Any], common: set[str], width: int = 36) -> str:
    """The overrides that tell this job from the others (those all jobs share are left out)."""
    text = " ".join(o for o in _overrides(job) if o not in common) or str(job.get("dir", ""))
    return text if len(text) <= width else text[: width - 3] + "..."


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if abs(value) < 100 else f"{value / 60:.1f} min"


def format_sweep(summary: Mapping[str, Any]) -> str:
    """The end-of-sweep table (< 120 columns): one row per job, then the totals. ``saved``
    is the measured time saved (negative: the cache cost time), ``-`` where not measured."""
    head = (
        f"{'job':>4}  {'overrides':<36} {'status':<10}{'calls':>7}{'hits':>7}{'rate':>7}"
        f"{'evals':>7}{'failed':>7}{'time':>10}{'saved':>10}"
    )
    lines = [head, "-" * len(head)]
    jobs = list(summary.get("jobs", []))
    shared = [set(_overrides(j)) for j in jobs]
    common = set.intersection(*shared) if len(shared) > 1 else set()
    for job in jobs:
        total = job.get("total") or {}
        calls, hits = int(total.get("calls", 0)), int(total.get("hits", 0))
        rate = f"{100.0 * hits / calls:.0f}%" if calls else "-"
        num = (job.get("job") or {}).get("num")
        lines.append(
            f"{num if num is not None else '?':>4}  {_job_label(job, common):<36} "
            f"{job.get('status')!s:<10}{calls:>7}{hits:>7}{rate:>7}"
            f"{int(total.get('evaluations', 0)):>7}{int(total.get('failed', 0)):>7}"
            f"{_secs(job.get('seconds')):>10}{_secs(job.get('time_saved')):>10}"
        )
    total = summary.get("total") or {}
    calls, hits = int(total.get("calls", 0)), int(total.get("hits", 0))
    rate = f"{100.0 * hits / calls:.1f}%" if calls else "-"
    lines.append("-" * len(head))
    lines.append(
        f"{summary.get('n_jobs', 0)} jobs ({summary.get('n_failed', 0)} failed): {calls} calls, "
        f"{hits} hits ({rate}), {int(total.get('evaluations', 0))} evaluations "
        f"({int(total.get('failed', 0))} failed), {_secs(summary.get('seconds'))} in jobs, "
        f"time saved {_secs(summary.get('time_saved'))}"
    )
    return "\n".join(lines)


def write_sweep_plot(summary: Mapping[str, Any], path: Path) -> Path:
    """Per job: calls split into hits, misses (+ repeats) and failed evaluations; its wall
    time and the time its cache saved (measured; absent where the task did not measure)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    jobs = [j for j in summary.get("jobs", []) if j.get("status") != "unreadable"]
    labels = [str((j.get("job") or {}).get("num", j.get("dir"))) for j in jobs]
    x = np.arange(len(jobs))

    def counts(name: str) -> np.ndarray[Any, Any]:
        return np.array([float((j.get("total") or {}).get(name, 0)) for j in jobs])

    hits, failed = counts("hits"), counts("failed")
    misses = counts("misses") + counts("repeats")
    seconds = np.array([j.get("seconds") or 0.0 for j in jobs], dtype=float)
    saved = np.array(
        [np.nan if j.get("time_saved") is None else j["time_saved"] for j in jobs], dtype=float
    )
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.5 * len(jobs) + 3), 6), dpi=100)
    try:
        top.bar(x, hits, label="hits", color="tab:green")
        top.bar(x, misses, bottom=hits, label="misses (evaluated)", color="tab:orange")
        top.bar(x, failed, bottom=hits + misses, label="failed (evaluated)", color="tab:red")
        top.set_ylabel("calls")
        top.set_title(
            f"{summary.get('n_jobs', 0)} jobs, {int((summary.get('total') or {}).get('calls', 0))}"
            f" calls, {int((summary.get('total') or {}).get('hits', 0))} hits",
            fontsize=9,
        )
        top.legend(fontsize=8)
        width = 0.4
        bottom.bar(x - width / 2, seconds, width, label="job wall time", color="tab:blue")
        bottom.bar(x + width / 2, np.nan_to_num(saved), width, label="time saved (measured)",
                   color="tab:green")
        bottom.axhline(0.0, color="grey", lw=0.6)
        bottom.set_ylabel("seconds")
        bottom.legend(fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks(x)
            ax.set_xticklabels(labels)
        bottom.set_xlabel("job")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
