"""What a valuation run leaves behind: ``values.csv``, a PNG plot and a terminal summary.

Kept apart from the task so the files can be regenerated from a result without re-running,
and so matplotlib (Agg, no display needed) is only imported when a plot is drawn: a warm
re-run writes the PNG from the run's cache (``plot_cache``) and never imports it.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ....stats import CacheStats

if TYPE_CHECKING:
    from ....memoize import Memoized

__all__ = [
    "FIGURE",
    "PLOT_CACHE_NAME",
    "PLOT_FORMAT_VERSION",
    "PlotInputs",
    "PointValue",
    "Saving",
    "ValueTable",
    "format_summary",
    "plot_cache",
    "render_plot",
    "write_csv",
    "write_plot",
]


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


# The plot's own cache. ``values.png`` is a pure function of what ``PlotInputs`` holds, the
# figure parameters and the matplotlib that draws it, so a warm re-run writes the stored
# bytes and never imports matplotlib (~0.4 s of import, ~0.15 s of drawing). Bump
# PLOT_FORMAT_VERSION whenever _render changes what it draws: the version is the key's
# signature, so an old entry can never be served for a new drawing.
PLOT_FORMAT_VERSION = "1"
PLOT_CACHE_NAME = "expcache.values_png"
_PLOT_SIGNATURE = f"expcache.app.tasks.valuation.report.values_png/{PLOT_FORMAT_VERSION}".encode()
# Every figure parameter _render reads: part of the key, so changing one misses.
FIGURE: Mapping[str, Any] = MappingProxyType(
    {
        "figsize": (8.0, 4.0),
        "dpi": 100,
        "style": "default",  # not the user's matplotlibrc: the key could not see it
        "title_width": 80,
        "title_fontsize": 9,
        "legend_fontsize": 8,
    }
)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

log = logging.getLogger("expcache")


@dataclass(frozen=True)
class PlotInputs:
    """Exactly what the drawing reads from a table and its title (the key of the plot):
    values and standard errors in plotted order, which points are flipped, the legend."""

    values: np.ndarray[Any, Any]
    errors: np.ndarray[Any, Any]
    noisy: np.ndarray[Any, Any]
    label: str
    title: str

    @classmethod
    def of(cls, table: ValueTable, title: str) -> PlotInputs:
        ranked = table.ranked()
        return cls(
            values=np.array([r.value for r in ranked], dtype=np.float64),
            errors=np.array(
                [0.0 if math.isnan(r.stderr) else r.stderr for r in ranked], dtype=np.float64
            ),
            noisy=np.array([r.noisy for r in ranked], dtype=bool),
            label=str(table.method),
            title=str(title),
        )


class _DrawFailed(Exception):
    """The drawing's own failure on its way out of the memoizer: re-raised as it is, never
    mistaken for a cache failure (which would draw a second time)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _matplotlib_version() -> str:
    """The installed matplotlib's version without importing it (its distribution metadata,
    a few ms): its rendering is part of what the stored bytes depend on."""
    from importlib import metadata

    try:
        return metadata.version("matplotlib")
    except metadata.PackageNotFoundError:
        return "unknown"


def _render(
    values: np.ndarray[Any, Any],
    errors: np.ndarray[Any, Any],
    noisy: np.ndarray[Any, Any],
    label: str,
    title: str,
    figure: Mapping[str, Any],
    matplotlib_version: str,
) -> bytes:
    """The PNG bytes of the plot; its arguments are its whole key (``matplotlib_version``
    is only there to be in it). Deterministic: Agg, the default style, no Software chunk
    in the metadata, so the same arguments give the same bytes in any process."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with matplotlib.style.context(figure["style"]):
        x = np.arange(len(values))
        fig, ax = plt.subplots(figsize=tuple(figure["figsize"]), dpi=figure["dpi"])
        try:
            ax.fill_between(x, values - errors, values + errors, alpha=0.25, label="± stderr")
            ax.plot(x, values, lw=1.2, label=label)
            if noisy.any():
                ax.scatter(
                    x[noisy], values[noisy], s=14, c="tab:red", zorder=3, label="flipped label"
                )
            ax.axhline(0.0, color="grey", lw=0.6)
            ax.set_xlabel("training points, by decreasing value")
            ax.set_ylabel("value")
            ax.set_title(
                "\n".join(textwrap.wrap(title, figure["title_width"])),
                fontsize=figure["title_fontsize"],
            )
            ax.legend(loc="upper right", fontsize=figure["legend_fontsize"])
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", metadata={"Software": None})
        finally:
            plt.close(fig)
    return buffer.getvalue()


def _render_or_fail(*args: Any) -> bytes:
    try:
        return _render(*args)
    except Exception as exc:
        raise _DrawFailed(exc) from exc


PlotCache = Callable[..., bytes]


def plot_cache(memoize: Callable[..., Memoized[..., bytes]]) -> Memoized[..., bytes]:
    """The plot's memoizer, built by ``memoize(fn, name=..., **options)`` (a context's
    ``wrap_private``: the run's backend, namespace and signing key, outside its statistics).

    Keyed by ``PLOT_FORMAT_VERSION`` and the arguments of ``_render`` only; always stored
    (a plot costs more than its lookup), without the stampede lease (two jobs drawing the
    same plot at once just draw it twice).
    """
    return memoize(
        _render_or_fail,
        name=PLOT_CACHE_NAME,
        signature=_PLOT_SIGNATURE,
        time_threshold=0.0,
        lease=False,
    )


def render_plot(table: ValueTable, title: str) -> bytes:
    """The PNG of ``write_plot``, drawn now (no cache)."""
    inputs = PlotInputs.of(table, title)
    return _render(*_render_args(inputs))


def _render_args(inputs: PlotInputs) -> tuple[Any, ...]:
    return (
        inputs.values,
        inputs.errors,
        inputs.noisy,
        inputs.label,
        inputs.title,
        dict(FIGURE),
        _matplotlib_version(),
    )


def write_plot(
    table: ValueTable, path: Path, title: str, *, cache: PlotCache | None = None
) -> Path:
    """Values sorted from high to low with their standard errors; flipped labels in red.

    With ``cache`` (``plot_cache(...)``) the PNG comes from the stored bytes when the same
    plot was drawn before. The cache is an optimisation only: whatever goes wrong in it (an
    unreadable backend, a bad entry, a key that cannot be built) is logged and the plot is
    drawn, so it never fails a run; only the drawing's own failure is raised.
    """
    inputs = PlotInputs.of(table, title)
    args = _render_args(inputs)
    png: bytes | None = None
    if cache is not None:
        try:
            found = cache(*args)
        except _DrawFailed as failure:
            raise failure.error from None
        except Exception as exc:
            log.warning("expcache: the plot cache failed (%r); drawing the plot", exc)
        else:
            if isinstance(found, bytes) and found.startswith(_PNG_MAGIC):
                png = found
            else:
                log.warning("expcache: the plot cache returned no PNG; drawing the plot")
    if png is None:
        png = _render(*args)
    path.write_bytes(png)
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
