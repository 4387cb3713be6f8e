"""Tables and plot of the methods_share_utility recipe, from its run folders.

Usage, from the repository root, after the README's sweeps::

    .venv/bin/python experiments/methods_share_utility/summarize.py

Reads ``runs/<sweep>/<job>/`` for the sweeps below that exist, writes ``results.md`` (the
README's tables) and ``methods_share.png`` next to this script.

Cross-method reuse is measured, not guessed: ``alone`` runs the same jobs each on a private
in-memory cache (only a method's own repeated subsets hit), so for every method
``hits(shared) - hits(alone)`` is the number of distinct subsets that the methods before it in
the sweep had already evaluated.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import Job, machine, markdown_table, read_jobs, read_values, write_results  # noqa: E402

SIZES = {"": "12 wine points", "large_": "100 breast-cancer points (the default job's data)"}
TIMED = {
    "nocache": "cache=none",
    "alone": "cache=memory (private per job)",
    "shared": "cache=disk, one namespace (default policy)",
    "nolease": "cache=disk, one namespace, policy.lease=false",
}


COLORS = {"no cache": "tab:gray", "own cache only": "tab:orange", "shared by the sweep": "tab:blue"}


def by_method(jobs: list[Job]) -> dict[str, Job]:
    return {str(j.choices.get("method")): j for j in jobs}


def reuse_table(shared: dict[str, Job], alone: dict[str, Job]) -> str:
    rows = []
    for method, job in shared.items():
        t, a = job.total, alone[method].total
        rows.append(
            [
                f"`{method}`",
                t["calls"],
                a["hits"],
                t["hits"],
                t["hits"] - a["hits"],
                t["evaluations"],
                t.get("failed", 0),
                f"{100 * t['hits'] / max(t['calls'], 1):.1f}%",
            ]
        )
    headers = [
        "method (sweep order)",
        "calls",
        "hits alone",
        "hits in the sweep",
        "from earlier methods",
        "evaluations",
        "of which failed (never cached)",
        "hit rate",
    ]
    return markdown_table(headers, rows)


def time_table(sweeps: dict[str, dict[str, Job]]) -> str:
    """Valuation seconds per job, and in brackets the part spent computing the utility: the
    bracket shows how busy the machine was (the same evaluations take longer under load)."""
    methods = list(next(iter(sweeps.values())))
    rows = []
    for name, jobs in sweeps.items():
        cells = [
            f"{jobs[m].fit_seconds:.2f} ({jobs[m].total['compute_seconds']:.2f})" for m in methods
        ]
        total = sum(j.fit_seconds for j in jobs.values())
        rows.append([TIMED[name], *cells, total])
    headers = ["sweep", *[f"`{m}` s (utility s)" for m in methods], "total s"]
    return markdown_table(headers, rows)


def same_values(sweeps: dict[str, dict[str, Job]]) -> str:
    ref = sweeps.get("nocache")
    if ref is None:
        return ""
    lines = []
    for name, jobs in sweeps.items():
        if name == "nocache":
            continue
        equal = all(read_values(jobs[m].folder) == read_values(ref[m].folder) for m in jobs)
        lines.append(
            f"- values with `{TIMED[name]}` == values without cache, every method: {equal}"
        )
    return "\n".join(lines)


def plot(
    panels: list[tuple[str, dict[str, Job], dict[str, Job], dict[str, Job] | None]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, shared, alone, nocache) in zip(axes[0], panels, strict=True):
        methods = list(shared)
        xs = range(len(methods))
        series = []
        if nocache is not None:
            series.append(("no cache", [nocache[m].total["evaluations"] for m in methods]))
        series.append(("own cache only", [alone[m].total["evaluations"] for m in methods]))
        series.append(("shared by the sweep", [shared[m].total["evaluations"] for m in methods]))
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            xk = [x + (k - (len(series) - 1) / 2) * width for x in xs]
            ax.bar(xk, values, width, label=label, color=COLORS[label])
        ax.set_ylim(0, 1.3 * max(max(values) for _, values in series))
        ax.set_xticks(list(xs), methods)
        ax.set(ylabel="utility evaluations", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    runs = HERE / "runs"
    parts = [f"Measured {machine(runs)}."]
    panels = []
    for prefix, label in SIZES.items():
        sweeps = {
            name: by_method(read_jobs(runs / f"{prefix}{name}"))
            for name in TIMED
            if (runs / f"{prefix}{name}").is_dir()
        }
        if "shared" not in sweeps or "alone" not in sweeps:
            continue
        job = next(iter(sweeps["shared"].values()))
        parts += [
            f"\n### {label}\n",
            f"{job.results['data']}, {job.results['n_points']} training points, "
            f"{job.results['model']}, {job.results['scorer']}.\n",
            reuse_table(sweeps["shared"], sweeps["alone"]),
            "",
            time_table(sweeps),
            "",
            same_values(sweeps),
        ]
        panels.append((label, sweeps["shared"], sweeps["alone"], sweeps.get("nocache")))
    if not panels:
        raise SystemExit(f"{runs}: run the README's sweeps first")
    write_results(HERE, "\n".join(parts))
    plot(panels, HERE / "methods_share.png")
    print(f"wrote {HERE / 'results.md'} and {HERE / 'methods_share.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
