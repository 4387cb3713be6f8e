"""The ``expcache`` console script: a thin ``@hydra.main`` over ``expcache.app.run``.

Where the configs are: an installed wheel ships the top-level ``conf/`` as the data package
``expcache/conf``; an editable checkout has it at ``<repo>/conf``. Hydra resolves a relative
``config_path`` against the calling file only for ``__main__``, so a console script must pass
an absolute path: ``config_dir()`` computes it (``$EXPCACHE_CONFIG_DIR`` overrides both).

Errors the user can fix (``ExpcacheError``: a bad value, an unreachable store with
``cache.strict``) are re-raised as a compact Hydra error, which Hydra prints as one message
without a traceback and exit code 1; ``HYDRA_FULL_ERROR=1`` shows the full chain.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from ..errors import ExpcacheError
from .records import STATS_FILE, SUMMARY_FILE, summarize_sweep
from .run import run

__all__ = ["CONFIG_DIR_ENV", "RunError", "config_dir", "main", "task_function"]

CONFIG_DIR_ENV = "EXPCACHE_CONFIG_DIR"


def config_dir() -> Path:
    """The absolute directory holding ``config.yaml``: wheel, then checkout."""
    if env := os.environ.get(CONFIG_DIR_ENV):
        return Path(env).expanduser().resolve()
    package = Path(__file__).resolve().parent.parent  # .../expcache
    for candidate in (package / "conf", package.parent.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(
        f"expcache: no config.yaml in {package / 'conf'} (installed wheel) nor in "
        f"{package.parent.parent / 'conf'} (source checkout); reinstall expcache or set "
        f"{CONFIG_DIR_ENV}"
    )


class RunError(CompactHydraException):
    """A user-fixable failure, printed by Hydra as one message (picklable: one str arg)."""


def task_function(cfg: DictConfig) -> dict[str, Any] | float:
    """The Hydra task: module-level and undecorated, so launchers pickle it by reference.
    With ``task.objective`` it returns that float (what sweepers such as optuna optimise)."""
    try:
        result = run(cfg)
    except ExpcacheError as exc:
        raise RunError(f"expcache: {exc}") from exc
    return cast(float, result["objective"]) if "objective" in result else result


_hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(
    task_function
)


def sweep_summary(args: list[str]) -> int:
    """``expcache --sweep-summary DIR``: 0 if every job file was usable, 1 if not, 2 on misuse."""
    if len(args) != 1:
        print("usage: expcache --sweep-summary SWEEP_DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    try:
        summary = summarize_sweep(root)
    except ExpcacheError as exc:
        print(f"expcache: --sweep-summary: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"expcache: --sweep-summary {root}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    total = summary["total"]
    print(
        f"{root / SUMMARY_FILE}: {summary['n_jobs']} jobs "
        f"({summary['n_failed']} failed), {total['calls']} calls, {total['hits']} hits, "
        f"{total['misses']} misses"
    )
    unreadable = [j for j in summary["jobs"] if j["status"] == "unreadable"]
    for job in unreadable:
        print(f"expcache: --sweep-summary: skipped {job['error']}", file=sys.stderr)
    if not summary["n_jobs"]:
        print(f"expcache: --sweep-summary: no {STATS_FILE} below {root}", file=sys.stderr)
        return 1
    return 1 if unreadable else 0


def main() -> None:
    if sys.argv[1:2] == ["--sweep-summary"]:
        sys.exit(sweep_summary(sys.argv[2:]))
    if sys.argv[1:2] == ["cache"]:  # `expcache cache ls ...`: not Hydra's override grammar
        from .cli_cache import main as cache_main

        sys.exit(cache_main(sys.argv[2:]))
    if sys.argv[1:2] == ["--replay"]:
        from .replay import replay

        sys.exit(replay(sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    main()
