"""Sweeps with the launchers that reach beyond one process tree: Hydra's Ray launcher on the
session's Ray cluster and submitit's local launcher, against one memcached.

The sweep is ``seed=0,1,2,3`` of the demo task: 20 subsets per job, 10 of them shared by every
seed. With everything stored (``time_threshold=0``) and stampede leases on, each subset is
computed exactly once whatever runs concurrently: 50 misses and 30 hits over the sweep, as
with the basic launcher, whose per-job results every launcher must reproduce. Each launcher
prints every job's summary at the end (``expcache.app.cluster``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from expcache.app.records import RESULTS_FILE, STATS_FILE, SUMMARY_FILE

from ..conftest import RAY_LOOPBACK, MemcachedServer, RayCluster
from .helpers import error_text, expcache

pytestmark = [pytest.mark.slow, pytest.mark.memcached]

SEEDS = (0, 1, 2, 3)
N_SUBSETS, N_SHARED = 20, 10
MISSES = N_SHARED + len(SEEDS) * (N_SUBSETS - N_SHARED)
HITS = len(SEEDS) * N_SUBSETS - MISSES


def _sweep(
    tmp_path: Path, name: str, memcached: MemcachedServer, namespace: str, *launcher: str
) -> tuple[Path, Any]:
    sweep = tmp_path / name
    proc = expcache(
        "-m",
        "task=demo",
        f"seed={','.join(map(str, SEEDS))}",
        "cache=memcached",
        f"cache.servers=[{memcached.address}]",
        f"cache.namespace={namespace}",
        "policy.time_threshold=0",
        f"task.n_subsets={N_SUBSETS}",
        f"task.shared_fraction={N_SHARED / N_SUBSETS}",
        f"hydra.sweep.dir={sweep}",
        *launcher,
        cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1", **RAY_LOOPBACK},
    )
    assert proc.returncode == 0, proc.stderr
    return sweep, proc


def _jobs(sweep: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (
            json.loads((sweep / str(n) / STATS_FILE).read_text()),
            json.loads((sweep / str(n) / RESULTS_FILE).read_text()),
        )
        for n in range(len(SEEDS))
    ]


def _check(sweep: Path, proc: Any, basic: list[tuple[dict[str, Any], dict[str, Any]]]) -> Any:
    summary = json.loads((sweep / SUMMARY_FILE).read_text())
    assert (summary["n_jobs"], summary["n_completed"]) == (len(SEEDS), len(SEEDS))
    jobs = _jobs(sweep)
    for (stats, results), (_, expected) in zip(jobs, basic, strict=True):
        assert stats["status"] == "completed"
        assert results["utilities"] == expected["utilities"]  # the basic launcher's values
    # every job's summary reached the launcher's terminal, in job order, after the sweep
    header = f"expcache: {len(SEEDS)} job(s) in {sweep} (0 not completed)"
    assert header in proc.stdout
    block = proc.stdout[proc.stdout.index(header) :].splitlines()
    heads = [line for line in block if line.startswith("#")]
    assert [h.split(" ", 1)[0] for h in heads] == [f"#{n}" for n in range(len(SEEDS))]
    for head, (stats, _) in zip(heads, jobs, strict=True):
        total = stats["total"]
        assert f"{total['calls']} calls: {total['hits']} hits, {total['misses']} misses" in head
    return summary


def test_ray_and_submitit_sweeps_share_one_memcached_and_equal_the_basic_launcher(
    tmp_path: Path, memcached: MemcachedServer, ray_cluster: RayCluster
) -> None:
    basic_dir, basic_proc = _sweep(tmp_path, "basic", memcached, "basic")
    basic = _jobs(basic_dir)
    summary = _check(basic_dir, basic_proc, basic)
    assert (summary["total"]["hits"], summary["total"]["misses"]) == (HITS, MISSES)

    on_ray = ("hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_cluster.address}")
    ray_dir, ray_proc = _sweep(tmp_path, "ray", memcached, "ray", *on_ray)
    summary = _check(ray_dir, ray_proc, basic)
    # jobs ran side by side on the cluster's nodes; each subset was still computed once
    assert (summary["total"]["hits"], summary["total"]["misses"]) == (HITS, MISSES)
    # a second sweep on the cluster: every job finds what the first sweep's jobs stored
    again_dir, again_proc = _sweep(tmp_path, "ray-again", memcached, "ray", *on_ray)
    summary = _check(again_dir, again_proc, basic)
    assert (summary["total"]["hits"], summary["total"]["misses"]) == (len(SEEDS) * N_SUBSETS, 0)

    sub_dir, sub_proc = _sweep(
        tmp_path, "submitit", memcached, "submitit", "hydra/launcher=submitit_local"
    )
    summary = _check(sub_dir, sub_proc, basic)
    assert (summary["total"]["hits"], summary["total"]["misses"]) == (HITS, MISSES)
    assert list((sub_dir / ".submitit").rglob("*_log.out"))  # where submitit keeps job output


def test_a_ray_launcher_spanning_hosts_with_a_disk_cache_warns_or_refuses(
    tmp_path: Path, ray_cluster: RayCluster
) -> None:
    ray_cluster.require_other_host()
    common = (
        "task=demo",
        "task.n_subsets=4",
        "cache=disk",
        f"cache.directory={tmp_path / 'disk'}",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={ray_cluster.address}",
    )
    env = {"HYDRA_FULL_ERROR": "1", **RAY_LOOPBACK}
    strict = expcache(
        "-m",
        *common,
        "seed=0,1",
        "cache.strict=true",
        f"hydra.sweep.dir={tmp_path / 's'}",
        cwd=tmp_path,
        env=env,
    )
    assert strict.returncode == 1
    text = error_text(strict.stderr)
    assert "disk is seen by the processes of one host only" in text
    assert "spans 2 hosts" in text and "cache.strict=false" in text
    assert not list((tmp_path / "s").glob("*/results.json"))  # no job ran
    warned = expcache(
        "-m", *common, "seed=0", f"hydra.sweep.dir={tmp_path / 'w'}", cwd=tmp_path, env=env
    )
    assert warned.returncode == 0, warned.stderr
    assert "cache.strict=true makes this an error" in warned.stderr + warned.stdout
    assert (tmp_path / "w" / "0" / RESULTS_FILE).is_file()
