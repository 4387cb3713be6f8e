"""Tables and plot of the stochastic_repetitions recipe, from its run folders.

Usage, from the repository root, after the README's loop (runs + snapshots)::

    .venv/bin/python experiments/stochastic_repetitions/summarize.py

Reads ``runs/run_<k>/`` (``cache_stats.json`` and the ``moments.csv`` written by
``snapshot.py`` right after run k), writes ``results.md`` and ``stochastic.png`` next to this
script.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import Job, machine, markdown_table, write_results  # noqa: E402

Row = dict[str, Any]


def read_runs(runs: Path) -> list[tuple[Job, dict[str, Row]]]:
    folders = sorted(runs.glob("run_*"), key=lambda p: int(p.name.split("_")[1]))
    out = []
    for folder in folders:
        if not (folder / "moments.csv").is_file():
            raise SystemExit(f"{folder}: no moments.csv: run snapshot.py after each run")
        with open(folder / "moments.csv", newline="") as fh:
            moments = {
                row["subset"]: {
                    "n": int(row["n"]),
                    "mean": float(row["mean"]) if row["mean"] else math.nan,
                    "stderr": float(row["stderr"]) if row["stderr"] else math.nan,
                    "converged": row["converged"] == "1",
                }
                for row in csv.DictReader(fh)
            }
        out.append((Job(folder), moments))
    if not out:
        raise SystemExit(f"{runs}: no run_<k> folders: run the README's loop first")
    return out


def run_table(runs: list[tuple[Job, dict[str, Row]]]) -> str:
    rows = []
    for k, (job, moments) in enumerate(runs):
        t = job.total
        calls = max(t["calls"], 1)
        rows.append(
            [
                k,
                job.seed,
                t["calls"],
                t["misses"],
                t["repeats"],
                t["hits"],
                f"{100 * t['hits'] / calls:.0f}%",
                f"{100 * t['repeats'] / calls:.0f}%",
                sum(m["converged"] for m in moments.values()),
            ]
        )
    headers = [
        "run",
        "seed",
        "calls",
        "misses (n=0)",
        "repeats",
        "hits (converged)",
        "hit fraction",
        "repeat fraction",
        "converged after the run",
    ]
    return markdown_table(headers, rows)


def shown_subsets(final: dict[str, Row]) -> list[str]:
    """The full set, then the leave-one-out sets that stopped first, in the middle, last."""
    loo = sorted((k for k in final if k != "all"), key=lambda k: (final[k]["n"], int(k[1:])))
    picks = ["all", loo[0], loo[len(loo) // 2], loo[-1]]
    return list(dict.fromkeys(picks))


def trajectory(runs: list[tuple[Job, dict[str, Row]]], subset: str) -> list[Row]:
    """(n, mean, stderr) of ``subset`` after each evaluation (repeated snapshots dropped)."""
    seen: dict[int, Row] = {}
    for _, moments in runs:
        m = moments[subset]
        seen.setdefault(m["n"], m)
    return [seen[n] for n in sorted(seen) if n > 0]


def subset_table(runs: list[tuple[Job, dict[str, Row]]], subsets: list[str], rtol: float) -> str:
    rows = []
    for subset in subsets:
        for m in trajectory(runs, subset):
            rows.append(
                [
                    "N" if subset == "all" else f"N \\ {{{subset[1:]}}}",
                    m["n"],
                    f"{m['mean']:.4f}",
                    "-" if math.isnan(m["stderr"]) else f"{m['stderr']:.4f}",
                    f"{rtol * abs(m['mean']):.4f}",
                    "yes" if m["converged"] else "no",
                ]
            )
    return markdown_table(["subset", "n", "mean", "stderr", "tolerance", "stops"], rows)


def plot(
    runs: list[tuple[Job, dict[str, Row]]], subsets: list[str], rtol: float, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (means, left, right) = plt.subplots(1, 3, figsize=(13, 3.6))
    for subset in subsets:
        points = trajectory(runs, subset)
        label = "N (all points)" if subset == "all" else f"N minus point {subset[1:]}"
        ns = [m["n"] for m in points]
        mean = [m["mean"] for m in points]
        err = [0.0 if math.isnan(m["stderr"]) else m["stderr"] for m in points]
        line = means.errorbar(ns, mean, yerr=err, fmt="o-", capsize=3, label=label)
        color = line[0].get_color()
        tail = [m for m in points if m["n"] > 1]
        left.plot([m["n"] for m in tail], [m["stderr"] for m in tail], "o-", color=color)
        left.plot([m["n"] for m in tail], [rtol * abs(m["mean"]) for m in tail], ":", color=color)
    means.set(xlabel="evaluations of the subset (n)", ylabel="running mean of the accuracy")
    means.set_title("running mean ± stderr", fontsize=10)
    means.legend(fontsize=7)
    left.set(xlabel="evaluations of the subset (n)", ylabel="standard error of the mean")
    left.set_title("stderr vs n (dotted: tolerance rtol·|mean|)", fontsize=10)
    ks = range(len(runs))
    totals = [job.total for job, _ in runs]
    misses = [t["misses"] for t in totals]
    repeats = [t["repeats"] for t in totals]
    hits = [t["hits"] for t in totals]
    right.bar(ks, misses, label="misses (first evaluation)", color="tab:red")
    right.bar(ks, repeats, bottom=misses, label="repeats (re-evaluated)", color="tab:orange")
    right.bar(
        ks,
        hits,
        bottom=[a + b for a, b in zip(misses, repeats, strict=True)],
        label="hits (converged)",
        color="tab:blue",
    )
    top = max(t["calls"] for t in totals)
    right.set(xlabel="run", ylabel="utility calls", ylim=(0, 1.4 * top))
    right.set_title("what each run's calls did", fontsize=10)
    right.legend(fontsize=7, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    folder = HERE / "runs"
    runs = read_runs(folder)
    first = runs[0][0]
    policy = first.stats["policy"]
    rtol = float(policy["rtol_stderr"])
    final = runs[-1][1]
    subsets = shown_subsets(final)
    needed = Counter(m["n"] for m in final.values())
    parts = [
        f"Measured {machine(folder)}; {first.results['method']} on {first.results['data']} "
        f"({first.results['n_points']} training points), {first.results['model']} "
        f"(random_state=None), policy: min_repetitions={policy['min_repetitions']}, "
        f"rtol_stderr={rtol}, atol_stderr={policy['atol_stderr']}, "
        f"max_repetitions={policy['max_repetitions']}.",
        "\n**Per run** (one leave-one-out valuation each; counters from cache_stats.json)\n",
        run_table(runs),
        "\n**Evaluations per subset after the last run**: "
        + ", ".join(f"n={n}: {c} subsets" for n, c in sorted(needed.items())),
        "\n**Running mean and standard error of a few subsets** (read from the cache after "
        "each run)\n",
        subset_table(runs, subsets, rtol),
    ]
    write_results(HERE, "\n".join(parts))
    plot(runs, subsets, rtol, HERE / "stochastic.png")
    print(f"wrote {HERE / 'results.md'} and {HERE / 'stochastic.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
