"""The Hydra callback behind ``cache_stats.json`` and ``sweep_summary.json``.

``run()`` writes each job's ``cache_stats.json`` itself; this callback is the safety net and
the aggregator. Hydra facts that shape it: ``on_job_end`` runs in the job's process (a joblib
worker, with the joblib launcher), ``on_multirun_end`` runs in the launcher's and is skipped
when any job failed, and an exception raised here only becomes a warning. Hence:

- ``on_job_end``: if the job left no ``cache_stats.json`` (it died before ``run()`` could
  write one), write a minimal one with the failure; in a multirun, rebuild the sweep summary
  from the job files, so a summary exists even when ``on_multirun_end`` never comes.
- ``on_multirun_end``: rebuild the summary once more, now with every job in.

The callback holds no state: joblib pickles it into every worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .records import STATS_FILE, empty_stats_record, summarize_sweep, to_jsonable, write_json

__all__ = ["CacheStatsCallback"]

log = logging.getLogger("expcache")


class CacheStatsCallback(Callback):
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
        try:
            summarize_sweep(Path(str(config.hydra.sweep.dir)))
        except Exception as exc:
            log.warning("expcache: could not write the sweep summary: %r", exc)
