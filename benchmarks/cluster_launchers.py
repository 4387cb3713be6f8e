"""One valuation sweep through each launcher, on one private memcached (README "Running on a
cluster"): jobs, calls, hits, misses and wall time per launcher.

Run from the repository root (root needed for the other-host node; about 5 minutes)::

    .venv/bin/python benchmarks/cluster_launchers.py [--repeat 2]

The sweep is four TMC-Shapley seeds on 30 iris points (10 permutations each, every
evaluation stored). Each launcher runs it cold, in its own namespace of the same server:
``basic`` (jobs one after another), ``joblib`` (2 processes), ``ray`` (Hydra's Ray launcher
starting a local Ray), ``ray cluster`` (the Ray launcher on a three-node cluster started
here: a head, a second node, and a node with a host of its own as in the tests), and
``submitit_local``. The wall time is the whole ``expcache -m`` command, Ray's start-up
included. Also one valuation with ``parallel.backend=ray`` on that cluster next to loky.
Everything stays on loopback. Writes ``benchmarks/results/cluster_launchers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from tests import ray_host  # noqa: E402

from _server import MemcachedProcess, exit_on_sigterm  # noqa: E402

SCRIPT = Path(sys.executable).parent / "expcache"
SWEEP = (
    "data=iris",
    "data.train_size=30",
    "method=tmc_shapley",
    "method.is_done.n_updates=10",
    "seed=0,1,2,3",
    "task.plot=false",
    "policy.time_threshold=0",
)
ONE_JOB = ("data=iris", "data.train_size=30", "method.is_done.n_updates=10", "task.plot=false",
           "policy.time_threshold=0")


def _expcache(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    env.update(ray_host.LOOPBACK, EXPCACHE_DIR=str(cwd / "usercache"))
    started = time.perf_counter()
    proc = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"expcache {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def _sweep(
    name: str, launcher: list[str], server: str, work: Path, rep: int, state: str
) -> dict[str, Any]:
    sweep = work / f"{_slug(name)}-{rep}-{state}"
    seconds, _ = _expcache(
        ["-m", *SWEEP, "cache=memcached", f"cache.servers=[{server}]",
         f"cache.namespace={_slug(name)}-{rep}", f"hydra.sweep.dir={sweep}", *launcher], work)
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    total = summary["total"]
    return {"launcher": name, "state": state, "rep": rep, "jobs": summary["n_jobs"],
            "calls": total["calls"], "hits": total["hits"], "misses": total["misses"],
            "seconds": round(seconds, 2)}


def _valuation(name: str, parallel: list[str], server: str, work: Path, rep: int) -> dict[str, Any]:
    out = work / f"val-{_slug(name)}-{rep}"
    seconds, _ = _expcache(
        [*ONE_JOB, "cache=memcached", f"cache.servers=[{server}]",
         f"cache.namespace=val-{_slug(name)}-{rep}", f"hydra.run.dir={out}",
         *parallel], work)
    results = json.loads((out / "results.json").read_text())
    cache = results["cache"]
    return {"parallel": name, "rep": rep, "calls": cache["calls"], "hits": cache["hits"],
            "workers": cache["worker_processes"], "fit": results["seconds"]["fit"],
            "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    exit_on_sigterm()
    os.environ.update(ray_host.LOOPBACK)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
    rows: list[dict[str, Any]] = []
    valuations: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="expcache-launchers-") as tmp, MemcachedProcess(
        threads=2
    ) as server:
        work = Path(tmp)
        cluster = Cluster(initialize_head=True,
                          head_node_args={**node, "include_dashboard": False})
        other = None
        try:
            cluster.add_node(**node)
            if os.geteuid() == 0:
                other = ray_host.start(cluster.address, work)
            launchers = {
                "basic": [],
                "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                # "local": a Ray of its own (address null would join the cluster started
                # here, which Ray remembers in /tmp/ray/ray_current_cluster)
                "ray": ["hydra/launcher=ray", "hydra.launcher.ray.init.address=local"],
                "ray cluster": ["hydra/launcher=ray",
                                f"hydra.launcher.ray.init.address={cluster.address}"],
                "submitit_local": ["hydra/launcher=submitit_local"],
            }
            parallels = {
                "loky, 2 processes": ["parallel.n_jobs=2"],
                "ray, local": ["parallel=ray"],
                "ray cluster": ["parallel=ray", f"parallel.address={cluster.address}"],
            }
            for rep in range(args.repeat):
                for name, launcher in launchers.items():
                    for state in ("cold", "warm"):  # warm: the same sweep again
                        rows.append(_sweep(name, launcher, server.address, work, rep, state))
                        print(rows[-1], flush=True)
                for name, parallel in parallels.items():
                    valuations.append(_valuation(name, parallel, server.address, work, rep))
                    print(valuations[-1], flush=True)
        finally:
            if other is not None:
                ray_host.stop(other)
            cluster.shutdown()
    nodes = "head, node2, expcache-host2" if other is not None else "head, node2"
    print(f"\nsweep: {' '.join(SWEEP)}; Ray cluster nodes: {nodes}\n")
    print("| launcher | sweep | jobs | calls | hits | misses | wall time |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key in dict.fromkeys((r["launcher"], r["state"]) for r in rows):
        mine = [r for r in rows if (r["launcher"], r["state"]) == key]
        times = sorted(r["seconds"] for r in mine)
        shown = f"{times[0]:.1f} s" if len(times) == 1 else f"{times[0]:.1f}-{times[-1]:.1f} s"
        r = mine[0]
        print(f"| {key[0]} | {key[1]} | {r['jobs']} | {r['calls']:,} | {r['hits']:,} | "
              f"{r['misses']:,} | {shown} |")
    print("\n| one valuation, parallel | calls | hits | worker processes | valuation | wall time |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in valuations:
        print(f"| {v['parallel']} | {v['calls']} | {v['hits']} | {v['workers']} | "
              f"{v['fit']:.1f} s | {v['seconds']:.1f} s |")
    out = ROOT / "benchmarks" / "results" / "cluster_launchers.json"
    out.write_text(json.dumps({"sweep": SWEEP, "nodes": nodes, "rows": rows,
                               "valuations": valuations}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
