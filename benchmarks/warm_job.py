"""The default job, warm, next to a process that only imports its stack (issue 17).

Run by hand from the repository root (about 2 minutes: one cold run, then interleaved warm
runs and import-floor processes; not part of CI)::

    .venv/bin/python benchmarks/warm_job.py [--warm 5] [--out benchmarks/results/warm_job.json]

Everything runs in a temporary directory with its own ``EXPCACHE_DIR`` (a fresh disk cache)
and ``hydra.run.dir``, so the user's cache and ``outputs/`` are never touched:

1. **cold**: ``expcache`` once on the empty cache (every utility evaluated and stored);
2. **warm** and **floor**, alternated ``--warm`` times: the same job again (every evaluation a
   hit), and a fresh interpreter that imports exactly the modules the warm job had loaded
   when it finished (its ``sys.modules``, recorded by the driver below) and does nothing else:
   the import floor of the stack;
3. one more warm run under ``python -X importtime``: import time by top-level package;
4. one warm run under the **driver**, which times the job's phases by wrapping functions
   from the outside (Hydra's compose, the app's plan and cache context, the task's setup,
   the method's construction, fit, the CSV, the plot, the summary), without editing the app.

The targets: warm job <= 1.3x its import floor, and a warm re-run >= 10x faster than cold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Runs the console script's main() in-process with wrappers that time its phases, then writes
# the phases and the loaded modules to $WARM_JOB_REPORT. Only wraps; changes nothing.
DRIVER = r"""
import atexit, functools, json, os, sys, time
T0 = time.perf_counter()
phases = {}
def timed(owner, name, label):
    fn = getattr(owner, name)
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, wrapper)
def report():
    phases["driver total"] = time.perf_counter() - T0
    with open(os.environ["WARM_JOB_REPORT"], "w") as fh:
        json.dump({"phases": phases, "modules": sorted(sys.modules)}, fh)
atexit.register(report)
t = time.perf_counter()
import expcache.app.main as app_main
phases["import expcache.app.main (Hydra, OmegaConf, the app)"] = time.perf_counter() - t
import hydra._internal.hydra as hh
app_run = sys.modules["expcache.app.run"]  # the package exports a function named run
timed(hh.Hydra, "compose_config", "Hydra: compose the config")
timed(hh, "run_job", "Hydra: run_job (output dir, logging, .hydra/*.yaml, the task)")
timed(app_run, "plan", "app: plan (every check; imports pyDVL, scikit-learn)")
timed(app_run, "build_context", "app: cache context (disk backend, probe)")
timed(app_main, "run", "app: run(cfg) (plan, context, task, records)")
import expcache.app.tasks.valuation.task
vt = sys.modules["expcache.app.tasks.valuation.task"]
vm = sys.modules["expcache.app.tasks.valuation.methods"]
timed(vt.ValuationTask, "__call__", "task: all of it")
timed(vt.ValuationTask, "setup", "task: load data, build model, scorer, utility")
timed(vm, "make_method", "task: build the pyDVL method")
def patch_report():
    import expcache.app.tasks.valuation.report
    vr = sys.modules["expcache.app.tasks.valuation.report"]
    timed(vr, "write_csv", "task: values.csv")
    timed(vr, "write_plot", "task: values.png (imports matplotlib, draws, saves)")
    timed(vr, "format_summary", "task: the printed summary")
    import expcache.integrations.pydvl
    ip = sys.modules["expcache.integrations.pydvl"]
    timed(ip, "cached_utility", "task: wrap the utility in the cache")
    timed(ip.CachedUtility, "__call__", "fit: expcache's utility calls (key, disk hit, ledger)")
    import expcache.calls
    timed(expcache.calls.Core, "call", "fit: of which Memoized calls (key, get, verify, decode)")
timed_import = time.perf_counter()
patch_report()
phases["(driver: import report, integrations.pydvl)"] = time.perf_counter() - timed_import
sys.argv = ["expcache", *sys.argv[1:]]
app_main.main()
"""

FLOOR = r"""
import importlib, json, sys
for name in json.load(open(sys.argv[1])):
    if name in sys.modules or name.startswith("__main__"):
        continue
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["EXPCACHE_DIR"] = str(tmp / "cache")
    env.pop("EXPCACHE_SIGNING_KEY", None)
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed_run(cmd: list[str], tmp: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its stderr): on a shared machine the CPU time
    says what the process itself cost when the wall clock also counts waiting for a core."""
    cpu, started = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return wall, cpu, done.stderr


def _job(
    tmp: Path, run: int | str, *prefix: str, extra_env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """(wall, CPU, stderr) of one ``expcache`` process (the default job) in ``tmp``."""
    cmd = [*prefix, f"hydra.run.dir={tmp / 'runs' / str(run)}"]
    return _timed_run(cmd, tmp, _env(tmp) | (extra_env or {}))


def _results(tmp: Path, run: int) -> dict[str, Any]:
    path = tmp / "runs" / str(run) / "results.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _importtime(stderr: str) -> dict[str, float]:
    """Seconds of import time (self) by top-level package, from ``-X importtime`` lines."""
    by: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        self_us, _cumulative, name = line[len("import time:") :].split("|")
        if self_us.strip().isdigit():
            by[name.strip().split(".")[0]] += int(self_us) / 1e6
    return dict(by)


def _top_level(stderr: str) -> list[tuple[str, float]]:
    """The imports nothing else was importing at the time (the script's, and a function's at
    run time), with their cumulative seconds: who pulls in what, summing to the whole."""
    rows: list[tuple[str, float]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        if cumulative.strip().isdigit() and name[:1] == " " and name[1:2] != " ":
            rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda row: -row[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5, help="warm runs (and floor processes)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    expcache = str(Path(PYTHON).with_name("expcache"))
    with tempfile.TemporaryDirectory(prefix="expcache-warm-") as name:
        tmp = Path(name)
        print("cold run (every evaluation computed and stored) ...", file=sys.stderr, flush=True)
        cold, cold_cpu, _ = _job(tmp, 0, expcache)
        cold_results = _results(tmp, 0)
        # the module set of a warm job, for the floor process
        report_path = tmp / "driver.json"
        _job(tmp, 1, PYTHON, "-c", DRIVER, extra_env={"WARM_JOB_REPORT": str(report_path)})
        driver = json.loads(report_path.read_text())
        driver_results = _results(tmp, 1)
        modules_path = tmp / "modules.json"
        modules_path.write_text(json.dumps(driver["modules"]))
        warm: list[tuple[float, float]] = []
        floor: list[tuple[float, float]] = []
        for i in range(args.warm):
            print(f"warm run and floor process {i + 1}/{args.warm} ...", file=sys.stderr,
                  flush=True)
            warm.append(_job(tmp, 10 + i, expcache)[:2])
            floor.append(_timed_run([PYTHON, "-c", FLOOR, str(modules_path)], tmp, _env(tmp))[:2])
        warm_results = _results(tmp, 10)
        importtime_wall, _, stderr = _job(tmp, "it", PYTHON, "-X", "importtime", expcache)
        imports = _importtime(stderr)
        top = _top_level(stderr)
    w = statistics.median(x[0] for x in warm)
    f = statistics.median(x[0] for x in floor)
    wc = statistics.median(x[1] for x in warm)
    fc = statistics.median(x[1] for x in floor)
    cache = warm_results.get("cache", {})
    lines = [
        "| default job (TMC-Shapley, 100 points, disk cache) | wall s | CPU s |",
        "|---|---:|---:|",
        f"| cold run (fresh cache: {cold_results['cache']['misses']} evaluations) "
        f"| {cold:.2f} | {cold_cpu:.2f} |",
        f"| warm run (median of {len(warm)}; {cache.get('hits')} hits, "
        f"{cache.get('misses')} evaluations) | {w:.2f} | {wc:.2f} |",
        f"| import floor: a process importing the warm job's {len(driver['modules'])} modules "
        f"(median of {len(floor)}) | {f:.2f} | {fc:.2f} |",
        f"| **warm / floor** (target <= 1.3) | **{w / f:.2f}** | {wc / fc:.2f} |",
        f"| **cold / warm** (target >= 10) | **{cold / w:.1f}** | {cold_cpu / wc:.1f} |",
        "",
        "| phase of one warm run (driver; wall, including the imports it triggers) | s |",
        "|---|---:|",
    ]
    for label, seconds in driver["phases"].items():
        lines.append(f"| {label} | {seconds:.3f} |")
    seconds = driver_results.get("seconds", {})
    lines += [
        f"| task's own record: setup {seconds.get('setup', 0):.3f} s, fit "
        f"{seconds.get('fit', 0):.3f} s, total {seconds.get('total', 0):.3f} s | |",
        "",
        f"| import time by top-level package (`-X importtime`, self times; that run "
        f"{importtime_wall:.2f} s) | s |",
        "|---|---:|",
    ]
    total = sum(imports.values())
    for package, secs in sorted(imports.items(), key=lambda kv: -kv[1])[:16]:
        lines.append(f"| {package} | {secs:.3f} |")
    lines.append(f"| **all {len(imports)} top-level packages** | **{total:.3f}** |")
    lines += ["", "| import not nested in another (what pulls in the rest) | cumulative s |",
              "|---|---:|"]
    for module, secs in top[:12]:
        lines.append(f"| {module} | {secs:.3f} |")
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text(json.dumps({
            "cold": [cold, cold_cpu], "warm": warm, "floor": floor, "phases": driver["phases"],
            "imports": imports, "top_level_imports": top, "modules": len(driver["modules"]),
            "warm_results": warm_results.get("seconds"), "cache": cache,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
