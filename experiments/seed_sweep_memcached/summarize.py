"""Tables and plot of the seed_sweep_memcached recipe, from its run folders.

Usage, from the repository root, after the README's sweeps::

    .venv/bin/python experiments/seed_sweep_memcached/summarize.py

Reads ``runs/{cold,warm,parallel,nocache}/<job>/`` (the sweeps that exist), writes
``results.md`` (the tables of the README) and ``seed_sweep.png`` next to this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import (  # noqa: E402
    Job,
    machine,
    markdown_table,
    read_jobs,
    read_values,
    sweep_seconds,
    write_results,
)

SWEEPS = {
    "cold": "cold: sequential, empty server",
    "warm": "warm: the same sweep again",
    "parallel": "parallel: 2 jobs at a time, fresh namespace",
    "nocache": "no cache (cache=none)",
}


def per_job(jobs: list[Job]) -> str:
    rows = []
    for job in jobs:
        t = job.total
        rows.append(
            [
                job.seed,
                t["calls"],
                t["hits"],
                t["misses"],
                t["evaluations"],
                f"{100 * t['hits'] / max(t['calls'], 1):.1f}%",
                t.get("failed", 0),
                t["lease_waits"],
                job.fit_seconds,
            ]
        )
    headers = [
        "seed",
        "calls",
        "hits",
        "misses",
        "evaluations",
        "hit rate",
        "failed (not cached)",
        "lease waits",
        "valuation s",
    ]
    return markdown_table(headers, rows)


def totals(sweeps: dict[str, list[Job]], runs: Path) -> str:
    rows = []
    for name, jobs in sweeps.items():
        calls = sum(j.total["calls"] for j in jobs)
        hits = sum(j.total["hits"] for j in jobs)
        evals = sum(j.total["evaluations"] for j in jobs)
        rows.append(
            [
                f"`{name}`",
                len(jobs),
                calls,
                hits,
                evals,
                sum(j.fit_seconds for j in jobs),
                sweep_seconds(runs / name),
            ]
        )
    headers = [
        "sweep",
        "jobs",
        "calls",
        "hits",
        "evaluations",
        "valuation s (sum)",
        "sweep wall s",
    ]
    return markdown_table(headers, rows)


def same_values(sweeps: dict[str, list[Job]]) -> str:
    """Whether every sweep gave every seed the same values, bit for bit."""
    reference = {j.seed: read_values(j.folder) for j in sweeps.get("cold", [])}
    lines = []
    for name, jobs in sweeps.items():
        if name == "cold" or not reference:
            continue
        equal = all(read_values(j.folder) == reference.get(j.seed) for j in jobs)
        lines.append(f"- values of `{name}` == values of `cold`, every seed, exactly: {equal}")
    return "\n".join(lines)


def plot(sweeps: dict[str, list[Job]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    cold = sweeps["cold"]
    seeds = [str(j.seed) for j in cold]
    evals = [j.total["evaluations"] for j in cold]
    hits = [j.total["hits"] for j in cold]
    left.bar(seeds, evals, label="evaluated", color="tab:orange")
    left.bar(seeds, hits, bottom=evals, label="answered by the server", color="tab:blue")
    left.set(xlabel="seed (job order)", ylabel="utility calls", title="cold sweep: calls per job")
    left.legend(loc="lower right", fontsize=8)
    width = 0.8 / len(sweeps)
    for k, (name, jobs) in enumerate(sweeps.items()):
        xs = [i + (k - (len(sweeps) - 1) / 2) * width for i in range(len(jobs))]
        right.bar(xs, [j.fit_seconds for j in jobs], width, label=name)
    right.set_xticks(range(len(cold)), seeds)
    top = max(j.fit_seconds for jobs in sweeps.values() for j in jobs)
    right.set(xlabel="seed", ylabel="valuation seconds", title="time per job", ylim=(0, 1.35 * top))
    right.legend(fontsize=7, ncol=len(sweeps), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    runs = HERE / "runs"
    sweeps = {name: read_jobs(runs / name) for name in SWEEPS if (runs / name).is_dir()}
    if "cold" not in sweeps:
        raise SystemExit(f"{runs / 'cold'}: run the README's sweeps first")
    job = sweeps["cold"][0]
    parts = [
        f"Measured {machine(runs)}; {job.results['method']} on {job.results['data']} "
        f"({job.results['n_points']} training points), {job.results['model']}.",
    ]
    for name, jobs in sweeps.items():
        parts += [f"\n**{SWEEPS[name]}** (`runs/{name}`)\n", per_job(jobs)]
    parts += ["\n**All sweeps**\n", totals(sweeps, runs), "", same_values(sweeps)]
    write_results(HERE, "\n".join(parts))
    plot(sweeps, HERE / "seed_sweep.png")
    print(f"wrote {HERE / 'results.md'} and {HERE / 'seed_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
