"""Sweeps beyond one machine: the start-up check of the launcher, and every job's summary.

``ClusterCallback`` runs in the launcher's process (the one that ran ``expcache -m``):

- ``on_multirun_start``: a launcher whose jobs may run on several hosts (Hydra's Ray launcher
  on a cluster of several hosts, the Ray AWS launcher, submitit's SLURM launcher) with a
  cache that one host keeps (disk) or one process (memory) gets a warning before any job
  starts; with ``cache.strict`` it is an error and nothing runs. For the Ray launcher with an
  ``address`` it connects to the cluster first to count its hosts: the launcher then finds
  Ray connected and uses that connection. (It has to: the launcher adds
  ``object_store_memory`` to its ``ray.init`` arguments, which Ray refuses when joining an
  existing cluster.)
- at the end of the sweep (``on_multirun_end``, or at exit when a failed job made Hydra skip
  it): ``job_summaries(sweep_dir)`` printed, one block per job from the files the jobs left
  (``cache_stats.json``, ``results.json``). Launchers hide the jobs' own output (submitit
  keeps it in ``.submitit/*_log.out``) or interleave it (Ray): this is where the terminal
  sees every job's result. ``job_summaries`` is a plain function so that a sweep-summary
  table elsewhere can reuse it.

Hydra turns an exception raised in a callback into a warning, so the strict error is one
line on stderr and ``SystemExit(1)``, like the folder check in ``callbacks``.
"""

from __future__ import annotations

import atexit
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..errors import ExpcacheError
from ..stats import CacheStats
from .records import RESULTS_FILE, STATS_FILE, read_json, read_record

__all__ = ["ClusterCallback", "job_summaries", "launcher_hosts", "print_job_summaries"]

log = logging.getLogger("expcache")

_RAY_LAUNCHER = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
# Launchers that place jobs on machines of their own choosing: the hosts cannot be counted
# from here, so any of them may be another host.
_MANY_HOSTS = {
    "hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher": "the Ray AWS launcher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": "SLURM",
}


def _select(config: DictConfig, key: str) -> Any:
    return OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)


def launcher_hosts(config: DictConfig) -> tuple[str, list[str] | None] | None:
    """What spans hosts in this sweep's launcher, and the hosts if they can be counted:
    ``None`` for launchers that stay on this machine (basic, joblib, submitit_local, a Ray
    the launcher starts itself)."""
    target = str(_select(config, "hydra.launcher._target_") or "")
    if target in _MANY_HOSTS:
        return _MANY_HOSTS[target], None
    if target != _RAY_LAUNCHER:
        return None
    init = _select(config, "hydra.launcher.ray.init")
    options = OmegaConf.to_container(init, resolve=True) if init is not None else {}
    assert isinstance(options, dict)
    address = options.get("address")
    if address in (None, "local"):
        return None
    import ray

    from ..integrations import ray as xray

    if not ray.is_initialized():
        # The launcher's own arguments minus what only a new local Ray takes.
        ray.init(**{str(k): v for k, v in options.items() if k != "object_store_memory"})
    return f"the Ray cluster at {address}", xray.cluster_hosts()


def _check_launcher(config: DictConfig) -> None:
    spans = launcher_hosts(config)
    if spans is None:
        return
    where, hosts = spans
    target = _select(config, "cache._target_")
    if not target:
        return
    from hydra.utils import get_class

    from ..integrations.ray import check_reach

    backend = get_class(str(target))
    strict = bool(_select(config, "cache.strict"))
    try:
        check_reach(backend, hosts, where=f"{where} (hydra/launcher)", strict=strict)
    except ExpcacheError as exc:
        print(f"expcache: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


# ----------------------------------------------------------------------------- summaries
def _counts(stats: CacheStats) -> str:
    return (
        f"{stats.calls} calls: {stats.hits} hits, {stats.misses} misses, "
        f"{stats.repeats} repeats, {stats.sets} stored"
    )


def _points(points: Any) -> str:
    if not isinstance(points, Sequence):
        return "?"
    shown = []
    for p in points[:3]:
        if isinstance(p, Mapping) and isinstance(p.get("value"), (int, float)):
            shown.append(f"{p.get('name', p.get('position', '?'))} ({p['value']:.4f})")
    return ", ".join(shown) or "-"


def _result_lines(results: Mapping[str, Any]) -> list[str]:
    """What a job computed, from its results.json: the valuation's ranking and time; a task
    without those keys is summarised by its counters alone."""
    lines = []
    values = results.get("values")
    if isinstance(values, Mapping):
        what = " on ".join(str(results[k]) for k in ("method", "data") if k in results)
        lines.append(
            f"    {what}: top {_points(values.get('top'))}; bottom {_points(values.get('bottom'))}"
        )
    seconds = results.get("seconds")
    cache = results.get("cache") if isinstance(results.get("cache"), Mapping) else {}
    workers = cache.get("worker_processes") if isinstance(cache, Mapping) else None
    if isinstance(seconds, Mapping) and isinstance(seconds.get("total"), (int, float)):
        extra = f", {workers} worker process(es) reported" if workers else ""
        lines.append(f"    {seconds['total']:.2f} s{extra}")
    return lines


def job_summaries(sweep_dir: str | Path) -> str:
    """One block per job of the sweep in ``sweep_dir``, in job order, from its files; a job
    is named by the overrides that set it apart from the sweep's other jobs."""
    root = Path(sweep_dir)
    jobs: list[tuple[int, str, Path, dict[str, Any] | str]] = []
    for path in sorted(root.rglob(STATS_FILE)):
        rel = str(path.parent.relative_to(root)) or "."
        try:
            record = read_record(path)
        except (OSError, ValueError) as exc:
            jobs.append((1 << 30, rel, path.parent, f"unreadable {STATS_FILE}: {exc}"))
            continue
        job = record.get("job") or {}
        num: int = job["num"] if isinstance(job.get("num"), int) else 1 << 30
        jobs.append((num, rel, path.parent, record))
    jobs.sort(key=lambda j: (j[0], j[1]))
    overrides = {
        rel: [str(o) for o in (r.get("job") or {}).get("overrides") or []]
        for _, rel, _, r in jobs
        if isinstance(r, dict)
    }
    common = (
        set.intersection(*(set(o) for o in overrides.values())) if len(overrides) > 1 else set()
    )
    failed = sum(1 for *_, r in jobs if not isinstance(r, dict) or r.get("status") != "completed")
    out = [f"expcache: {len(jobs)} job(s) in {root} ({failed} not completed)"]
    for num, rel, folder, entry in jobs:
        label = f"#{num}" if num != 1 << 30 else f"#? {rel}"
        if not isinstance(entry, dict):
            out += [f"{label}: {entry}", f"    {folder}"]
            continue
        own = " ".join(o for o in overrides.get(rel, []) if o not in common)
        head = f"{label} {own}".rstrip() + f": {entry.get('status')}"
        if entry.get("status") == "completed":
            backend = entry.get("backend") or {}
            head += f", {_counts(entry['total'])} ({backend.get('backend', '?')})"
        else:
            head += f": {entry.get('error')}"
        out.append(head)
        try:
            results = read_json(folder / RESULTS_FILE)
        except (OSError, ValueError):
            results = None
        if isinstance(results, Mapping):
            out += _result_lines(results)
        out.append(f"    {folder}")
    return "\n".join(out)


def print_job_summaries(sweep_dir: str | Path, file: TextIO | None = None) -> None:
    """``job_summaries`` to ``file`` (stdout); never raises (the sweep's outcome stands)."""
    try:
        text = job_summaries(sweep_dir)
    except Exception as exc:
        log.warning("expcache: could not summarise the jobs of %s: %r", sweep_dir, exc)
        return
    print(text, file=file or sys.stdout, flush=True)


class _Pending:
    """The sweep folder whose summaries are still to be printed (launcher process only)."""

    sweep_dir: Path | None = None

    @classmethod
    def flush(cls) -> None:
        if cls.sweep_dir is not None:
            sweep_dir, cls.sweep_dir = cls.sweep_dir, None
            if sweep_dir.is_dir():
                print_job_summaries(sweep_dir)


atexit.register(_Pending.flush)


class ClusterCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_launcher(config)
        _Pending.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _Pending.flush()
