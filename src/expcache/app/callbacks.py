"""The Hydra callback behind ``cache_stats.json`` and ``sweep_summary.json``.

``run()`` writes each job's ``cache_stats.json`` itself; this callback is the safety net and
the aggregator. Hydra facts that shape it: ``on_job_end`` runs in the job's process (a joblib
worker, with the joblib launcher), ``on_multirun_end`` runs in the launcher's and is skipped
when any job failed, and an exception raised here only becomes a warning. Hence:

- ``on_job_end``: if the job left no ``cache_stats.json`` (it died before ``run()`` could
  write one), write a minimal one with the failure; in a multirun, rebuild the sweep summary
  from the job files, so a summary exists even when ``on_multirun_end`` never comes.
- ``on_multirun_end``: rebuild the summary once more, now with every job in, print the
  sweep's table and write ``sweep.png``. Because Hydra skips this hook when a job failed,
  ``on_multirun_start`` (in the same, launcher, process) also registers the same finish with
  ``atexit``: it runs once, whichever comes first, so a sweep with failed jobs still ends
  with its table and plot.
- ``on_run_start``/``on_multirun_start``: the run (sweep) folder must be creatable. Hydra
  creates it before the job starts and prints a traceback when a file is in the way; this
  checks first and exits with one line naming ``hydra.run.dir``. It raises ``SystemExit``
  on purpose: Hydra turns any ``Exception`` raised in a callback into a warning.

The callback holds no state: joblib pickles it into every worker (the finished sweeps are
a module-level set of the launcher's process).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .records import (
    PLOT_FILE,
    STATS_FILE,
    empty_stats_record,
    format_sweep,
    summarize_sweep,
    to_jsonable,
    write_json,
    write_sweep_plot,
)

__all__ = ["CacheStatsCallback", "finish_sweep"]

log = logging.getLogger("expcache")

_FINISHED: set[str] = set()
_FINISH_LOCK = threading.Lock()


def finish_sweep(sweep_dir: str) -> None:
    """Rebuild the summary, print the table, write ``sweep.png`` -- once per sweep folder."""
    with _FINISH_LOCK:
        if sweep_dir in _FINISHED:
            return
        _FINISHED.add(sweep_dir)
    root = Path(sweep_dir)
    if not root.is_dir():  # the sweep never started a job
        return
    try:
        summary = summarize_sweep(root)
        print(f"\nexpcache: sweep {root}\n{format_sweep(summary)}", flush=True)
        if summary["n_jobs"]:
            write_sweep_plot(summary, root / PLOT_FILE)
    except Exception as exc:
        log.warning("expcache: could not finish the sweep summary of %s: %r", root, exc)


def unusable_folder(path: Path) -> str | None:
    """Why ``path`` cannot be created as a folder (a file in the way, no write access)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file" if probe != path else "it is a file"
    if probe != path and not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _check_folder(config: DictConfig, key: str) -> None:
    value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    if value is None:
        return
    why = unusable_folder(Path(str(value)))
    if why is not None:
        print(f"expcache: {key}={value}: cannot create this folder: {why}", file=sys.stderr)
        raise SystemExit(1)


class CacheStatsCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_folder(config, "hydra.sweep.dir")
        atexit.register(finish_sweep, str(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            out = Path(str(config.hydra.runtime.output_dir))
            path = out / STATS_FILE
            if not path.exists():
                error = None
                if job_return.status == JobStatus.FAILED:
                    # ``return_value`` re-raises for a failed job: read the stored exception.
                    exc = getattr(job_return, "_return_value", None)
                    error = f"{type(exc).__name__}: {exc}"
                record = {
                    "status": "completed" if job_return.status == JobStatus.COMPLETED else "failed",
                    "error": error,
                    "seed": OmegaConf.select(
                        config, "seed", default=None, throw_on_resolution_failure=False
                    ),
                    "job": {
                        "num": OmegaConf.select(config, "hydra.job.num", default=None),
                        "overrides": list(job_return.overrides or []),
                    },
                    **empty_stats_record(),
                }
                write_json(path, to_jsonable(record, "cache_stats"))
            if config.hydra.mode == RunMode.MULTIRUN:
                summarize_sweep(Path(str(config.hydra.sweep.dir)))
        except Exception as exc:  # Hydra would only warn; say what went wrong, clearly
            log.warning("expcache: could not record cache stats for this job: %r", exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish_sweep(str(config.hydra.sweep.dir))
