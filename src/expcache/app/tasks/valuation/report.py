"""What a valuation run leaves behind: ``values.csv``, a PNG plot and a terminal summary.

Kept apart from the task so the files can be regenerated from a result without re-running,
and so matplotlib (Agg, no display needed) is only imported when a plot is written.
"""

from __future__ import annotations

import csv
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ....stats import CacheStats

__all__ = ["PointValue", "Saving", "ValueTable", "format_summary", "write_csv", "write_plot"]


@dataclass(frozen=True)
class PointValue:
    position: int  # index into the training set
    name: str  # the point's row in the original dataset
    value: float
    stderr: float
    count: int
    label: Any
    noisy: bool


@dataclass
class ValueTable:
    """The valuation result as plain rows, sorted by position."""

    rows: list[PointValue]
    method: str

    @classmethod
    def from_result(
        cls,
        result: Any,
        labels: Sequence[Any] | np.ndarray[Any, Any],
        noisy: Sequence[int] | np.ndarray[Any, Any] | None,
        method: str,
    ) -> ValueTable:
        flipped = {int(i) for i in noisy} if noisy is not None else set()
        rows = [
            PointValue(
                position=int(idx),
                name=str(name),
                value=float(value),
                stderr=float(err) if np.isfinite(err) else math.nan,
                count=int(count),
                label=labels[int(idx)].item()
                if hasattr(labels[int(idx)], "item")
                else labels[int(idx)],
                noisy=int(idx) in flipped,
            )
            for idx, name, value, err, count in zip(
                result.indices,
                result.names,
                result.values,
                result.stderr,
                result.counts,
                strict=True,
            )
        ]
        rows.sort(key=lambda r: r.position)
        return cls(rows, method)

    def ranked(self) -> list[PointValue]:
        """Highest value first; ties broken by position so the order is reproducible."""
        return sorted(self.rows, key=lambda r: (-r.value, r.position))

    def summary(self, top_k: int) -> dict[str, Any]:
        values = np.array([r.value for r in self.rows], dtype=float)
        ranked = self.ranked()
        k = min(top_k, len(ranked))

        def point(r: PointValue) -> dict[str, Any]:
            return {
                "position": r.position,
                "name": r.name,
                "value": r.value,
                "stderr": r.stderr,
                "noisy": r.noisy,
            }

        errors = np.array([r.stderr for r in self.rows], dtype=float)
        finite = errors[np.isfinite(errors)]
        out: dict[str, Any] = {
            "mean": float(values.mean()) if values.size else math.nan,
            "std": float(values.std()) if values.size else math.nan,
            "min": float(values.min()) if values.size else math.nan,
            "max": float(values.max()) if values.size else math.nan,
            "sum": float(values.sum()),
            "mean_stderr": float(finite.mean()) if finite.size else math.nan,
            "top": [point(r) for r in ranked[:k]],
            "bottom": [point(r) for r in ranked[::-1][:k]],
        }
        n_noisy = sum(r.noisy for r in self.rows)
        if n_noisy:
            # How many of the flipped labels the method put in its bottom n_noisy points.
            bottom = ranked[::-1][:n_noisy]
            out["noisy_points"] = n_noisy
            out["noisy_in_bottom"] = sum(r.noisy for r in bottom)
        return out


def write_csv(table: ValueTable, path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "position", "name", "value", "stderr", "count", "label", "noisy"])
        for rank, r in enumerate(table.ranked(), start=1):
            writer.writerow(
                [
                    rank,
                    r.position,
                    r.name,
                    repr(r.value),
                    repr(r.stderr),
                    r.count,
                    r.label,
                    int(r.noisy),
                ]
            )
    return path


def write_plot(table: ValueTable, path: Path, title: str) -> Path:
    """Values sorted from high to low with their standard errors; flipped labels in red."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ranked = table.ranked()
    x = np.arange(len(ranked))
    values = np.array([r.value for r in ranked])
    errors = np.array([0.0 if math.isnan(r.stderr) else r.stderr for r in ranked])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        ax.fill_between(x, values - errors, values + errors, alpha=0.25, label="± stderr")
        ax.plot(x, values, lw=1.2, label=table.method)
        noisy = np.array([r.noisy for r in ranked])
        if noisy.any():
            ax.scatter(x[noisy], values[noisy], s=14, c="tab:red", zorder=3, label="flipped label")
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xlabel("training points, by decreasing value")
        ax.set_ylabel("value")
        ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if abs(s) < 100 else f"{s / 60:.1f} min"


@dataclass(frozen=True)
class Saving:
    """What the cache saved, from measured times only.

    Uncached, this run's calls would have cost the misses' compute time (measured now) plus
    the hits' compute time (measured when their entries were stored: ``saved_seconds``).
    Cached they cost ``call_seconds``: the wall time measured around every call (lookups,
    stores, computing). The difference is the time saved; it is negative when a utility is so
    cheap that looking it up costs more than computing it, and then it is said so.
    """

    uncached_seconds: float
    cached_seconds: float

    @property
    def seconds(self) -> float:
        return self.uncached_seconds - self.cached_seconds

    @classmethod
    def of(cls, stats: CacheStats, call_seconds: float) -> Saving:
        return cls(stats.compute_seconds + stats.saved_seconds, call_seconds)

    def as_dict(self) -> dict[str, float]:
        return {
            "seconds": self.seconds,
            "uncached_seconds": self.uncached_seconds,
            "cached_seconds": self.cached_seconds,
        }

    def describe(self, hits: int) -> str:
        if not hits:
            return f"no hits, no time saved ({_seconds(self.cached_seconds)} in cached calls)"
        if self.seconds > 0:
            return (
                f"time saved {_seconds(self.seconds)}: {_seconds(self.cached_seconds)} in "
                f"cached calls instead of ~{_seconds(self.uncached_seconds)} uncached"
            )
        return (
            f"no time saved: cached calls took {_seconds(self.cached_seconds)}, "
            f"{_seconds(-self.seconds)} more than ~{_seconds(self.uncached_seconds)} uncached"
        )


def format_summary(
    table: ValueTable,
    stats: CacheStats,
    *,
    title: str,
    top_k: int,
    seconds: dict[str, float],
    workers: int,
    saving: Saving | None = None,
    first_error: str | None = None,
    verbose: bool = False,
) -> str:
    """A short plain-text report (< 100 columns): top and bottom points side by side with
    their standard errors, then the cache."""
    ranked = table.ranked()
    k = min(top_k, len(ranked))
    lines = [title, ""]
    side = f"{'point':>8}{'value':>11}{'stderr':>10}"
    head = f"{'top':<4}{side}     {'bottom':<7}{side}"
    lines.append(head)
    lines.append("-" * len(head))
    bottom = ranked[::-1][:k]

    def cell(r: PointValue) -> str:
        err = "-" if math.isnan(r.stderr) else f"{r.stderr:.5f}"
        return f"{r.name:>8}{r.value:>11.5f}{err:>10}{'*' if r.noisy else ' '}"

    for i in range(k):
        lines.append(f"{i + 1:<4}{cell(ranked[i])}    {i + 1:<7}{cell(bottom[i])}")
    if any(r.noisy for r in table.rows):
        lines.append("(* = flipped label)")
    calls = stats.calls
    rate = 100.0 * stats.hits / calls if calls else 0.0
    lines += [
        "",
        f"cache     {calls} calls: {stats.hits} hits ({rate:.1f}%), {stats.misses} misses, "
        f"{stats.repeats} repeats, {stats.failed} failed; {stats.evaluations} evaluations, "
        f"{stats.sets} stored",
    ]
    lines.append(f"          {_seconds(stats.compute_seconds)} computing")
    if saving is not None:
        lines.append(f"          {saving.describe(stats.hits)}")
    if stats.failed:
        lines.append(
            f"          {stats.failed} failed: given the default score, not cached (the next "
            "run retries them)"
        )
        if first_error:
            first = first_error.splitlines()[0] if first_error.strip() else first_error
            lines.append(f"          first error: {first[:96]}")
    if verbose or workers:
        lines.append(f"          {workers} worker process(es) reported their counters")
    failures = stats.errors + stats.timeouts + stats.bypassed + stats.corrupt
    if failures:
        lines.append(
            f"          backend trouble: {stats.errors} errors, {stats.timeouts} timeouts, "
            f"{stats.bypassed} bypassed, {stats.corrupt} corrupt entries"
        )
    lines.append(
        f"time      {_seconds(seconds['total'])} total "
        f"(setup {_seconds(seconds['setup'])}, valuation {_seconds(seconds['fit'])})"
    )
    return "\n".join(lines)
