"""``run(cfg)``: the whole job as a pure function of the composed config.

plan (every check, no I/O) -> build the cache context (one probe) -> call the task -> write
``results.json`` -> always write ``cache_stats.json`` (also for a failed job, with the error)
and ``environment.json`` (versions, git commit, host, cache location, function identities).
With ``task.objective`` set, the value at that dotted path of the result is also returned as
a float (``objective``): what Hydra's sweepers (optuna, ...) optimise.
The console script is a thin ``@hydra.main`` over this; tests and notebooks call it directly
with an ``output_dir``. The return value is plain data, so it crosses process boundaries
(joblib launcher).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .build import build_context, plan
from .context import CacheContext
from .environment import ENVIRONMENT_FILE, environment
from .records import RESULTS_FILE, STATS_FILE, empty_stats_record, to_jsonable, write_json

__all__ = ["job_info", "job_output_dir", "objective_value", "run", "select_path"]

log = logging.getLogger("expcache")


def job_output_dir() -> Path:
    """The current Hydra job's output folder."""
    if not HydraConfig.initialized():
        raise ConfigError(
            param="output_dir",
            expected="a folder: run(cfg) outside a Hydra job needs an explicit output_dir=...",
        )
    return Path(HydraConfig.get().runtime.output_dir)


def job_info() -> dict[str, Any]:
    """Which job of which sweep this is (empty outside Hydra): for the records."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = OmegaConf.to_container(hc.runtime.choices, resolve=True)
    assert isinstance(choices, dict)
    return {
        "mode": str(hc.mode.name) if hc.mode is not None else None,
        "num": OmegaConf.select(cast(DictConfig, hc), "job.num", default=None),
        "overrides": list(OmegaConf.to_container(hc.overrides.task, resolve=False) or []),
        "choices": {k: v for k, v in choices.items() if not str(k).startswith("hydra/")},
    }


def select_path(data: Any, path: str) -> Any:
    """``data`` at the dotted ``path`` (``values.top.0.value``: mapping keys, list indices);
    ``KeyError`` naming the first part that is missing."""
    current = data
    for i, part in enumerate(path.split(".")):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, Sequence) and not isinstance(current, str) and part.isdigit():
            if int(part) >= len(current):
                raise KeyError(".".join(path.split(".")[: i + 1]))
            current = current[int(part)]
        else:
            raise KeyError(".".join(path.split(".")[: i + 1]))
    return current


def objective_value(results: Any, path: str) -> float:
    """The float a sweeper optimises, or ``ConfigError`` about ``task.objective``."""
    try:
        value = select_path(results, path)
    except KeyError as exc:
        keys = sorted(results) if isinstance(results, Mapping) else []
        raise ConfigError(
            param="task.objective",
            value=path,
            expected="a dotted path to a number in the task's result",
            hint=f"{exc.args[0]} is not in it (top-level keys: {', '.join(keys)})",
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(
            param="task.objective",
            value=path,
            expected="a dotted path to a finite number in the task's result",
            hint=f"it holds {value!r}",
        )
    return float(value)


def run(cfg: DictConfig, *, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the task named by ``cfg.task`` with a cache context built from ``cfg``.

    Raises ``ConfigError`` before any work when the config is wrong, ``BackendUnavailable``
    when the store is unreachable and ``cache.strict`` is set, and whatever the task raises.
    """
    out = Path(output_dir) if output_dir is not None else job_output_dir()
    record: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "seed": OmegaConf.select(cfg, "seed", default=None, throw_on_resolution_failure=False),
        "task": OmegaConf.select(
            cfg, "task._target_", default=None, throw_on_resolution_failure=False
        ),
        "job": job_info(),
    }
    ctx: CacheContext | None = None
    started = time.perf_counter()
    try:
        p = plan(cfg)
        ctx = build_context(p)
        out.mkdir(parents=True, exist_ok=True)
        results = to_jsonable(p.task(ctx=ctx, output_dir=out, seed=p.seed))
        write_json(out / RESULTS_FILE, results)
        path = getattr(p.task, "objective", None)
        objective = objective_value(results, path) if isinstance(path, str) else None
        record["status"] = "completed"
        summary = ctx.summary()
        total = summary["total"]
        log.info(
            "expcache: %d calls, %d hits, %d misses, %d repeats, %d failed, %d stored (%s); "
            "results in %s",
            total["calls"],
            total["hits"],
            total["misses"],
            total["repeats"],
            total["failed"],
            total["sets"],
            summary["backend"].get("backend"),
            out,
        )
        returned = {
            "seed": p.seed,
            "output_dir": str(out),
            "results": results,
            "cache_stats": summary,
        }
        if objective is not None:
            record["objective"] = {"path": path, "value": objective}
            returned["objective"] = objective
        return returned
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record["seconds"] = round(time.perf_counter() - started, 4)
        record.update(ctx.summary() if ctx is not None else empty_stats_record())
        env = environment(
            cache=ctx.backend_info if ctx is not None else None,
            functions=ctx.identities() if ctx is not None else None,
        )
        if ctx is not None:
            ctx.close()
        for name, data in ((STATS_FILE, record), (ENVIRONMENT_FILE, env)):
            try:
                write_json(out / name, to_jsonable(data, name.split(".")[0]))
            except Exception as exc:  # never let bookkeeping hide the run's own outcome
                log.warning("expcache: could not write %s: %r", out / name, exc)
