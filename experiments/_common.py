"""Shared by the recipes' scripts: read run folders, print Markdown tables.

The scripts run as ``python experiments/<recipe>/<script>.py`` from the repository root and
put this folder on ``sys.path`` themselves, so no package or install step is needed.
"""

from __future__ import annotations

import csv
import json
import platform
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "Job",
    "machine",
    "markdown_table",
    "read_jobs",
    "read_values",
    "sweep_seconds",
    "write_results",
]


class Job:
    """One job folder: its ``results.json`` and ``cache_stats.json`` (totals of the run)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.results: dict[str, Any] = json.loads((folder / "results.json").read_text())
        self.stats: dict[str, Any] = json.loads((folder / "cache_stats.json").read_text())
        if self.stats.get("status") != "completed":
            raise SystemExit(f"{folder}: the job did not complete ({self.stats.get('error')})")

    @property
    def total(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.stats["total"]
        return counts

    @property
    def seed(self) -> int:
        return int(self.results["seed"])

    @property
    def fit_seconds(self) -> float:
        return float(self.results["seconds"]["fit"])

    @property
    def choices(self) -> dict[str, Any]:
        chosen: dict[str, Any] = self.stats.get("job", {}).get("choices", {})
        return chosen


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The completed jobs of a sweep (or a single run folder), in job order."""
    if (sweep_dir / "results.json").is_file():
        return [Job(sweep_dir)]
    folders = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / "results.json").is_file()]
    if not folders:
        raise SystemExit(f"{sweep_dir}: no job folders with results.json (run the recipe first)")
    return [Job(p) for p in sorted(folders, key=lambda p: int(p.name) if p.name.isdigit() else 0)]


def sweep_seconds(sweep_dir: Path) -> float:
    """Wall time of a sweep from its files: Hydra writes ``multirun.yaml`` before the first
    job starts and each job writes ``cache_stats.json`` last (interpreter start-up excluded)."""
    start = (sweep_dir / "multirun.yaml").stat().st_mtime
    end = max(p.stat().st_mtime for p in sweep_dir.glob("*/cache_stats.json"))
    return end - start


def read_values(folder: Path) -> dict[str, float]:
    """``values.csv`` of a job as {point name: value}."""
    with open(folder / "values.csv", newline="") as fh:
        return {row["name"]: float(row["value"]) for row in csv.DictReader(fh)}


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(runs: Path) -> str:
    """When (the first job's finish) and where the numbers under ``runs`` were produced."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 0
    first = min(p.stat().st_mtime for p in runs.rglob("cache_stats.json"))
    stamp = datetime.fromtimestamp(first, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{stamp}, {platform.system()} {platform.machine()}, {cpus} vCPU, "
        f"Python {platform.python_version()}"
    )


BEGIN = "<!-- results.md: begin (written by summarize.py) -->"
END = "<!-- results.md: end -->"


def write_results(folder: Path, text: str) -> None:
    """Write ``results.md`` and copy it into the README between the markers, so the README's
    numbers are always the ones the recipe's commands produced."""
    text = text.rstrip("\n") + "\n"
    (folder / "results.md").write_text(text)
    readme = folder / "README.md"
    if readme.is_file():
        current = readme.read_text()
        if BEGIN in current and END in current:
            head, rest = current.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(text)
