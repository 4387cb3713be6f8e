"""``expcache --replay RUN_DIR [OVERRIDE ...]``: run a job again from its folder, compare.

The job is re-run with the overrides Hydra recorded in ``RUN_DIR/.hydra/overrides.yaml``
(plus any given after the folder, e.g. ``cache=none`` to recompute everything instead of
answering from the cache) into a new folder -- ``hydra.run.dir=...`` among the extra
overrides, else ``<RUN_DIR>.replay-<time>`` beside it -- in a fresh process of the same
interpreter. Then it says whether the results are identical: ``values.csv`` byte for byte
and ``results.json`` without what legitimately differs between runs (wall times, the cache
counters, the output folder). It also reports where the composed config and the
environment (package versions, git commit, Python) differ from the recorded ones: a replay
after an upgrade that gives other values should say why.

Overrides are replayed rather than the saved ``config.yaml`` so that the replay goes through
the same composition, schemas and checks as any run; the config comparison shows when the
defaults of the installed version composed something else.

Exit status: 0 identical, 1 different (or the replay failed), 2 misuse.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .environment import ENVIRONMENT_FILE
from .records import RESULTS_FILE, STATS_FILE, read_json

__all__ = ["VOLATILE_RESULTS", "compare_results", "flat_diff", "replay"]

# Keys of results.json that differ between two runs of one job without meaning anything.
VOLATILE_RESULTS = frozenset({"seconds", "cache", "output_dir"})
_VALUES = "values.csv"
_SHOWN = 8


def flat_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ, with both values."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{path}: {old[key]!r} -> (absent)")
            else:
                out.extend(flat_diff(old[key], new[key], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(flat_diff(a, b, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return [] if old == new else [f"{prefix or '.'}: {old!r} -> {new!r}"]


def compare_results(old_dir: Path, new_dir: Path) -> list[str]:
    """What differs between two job folders' results (empty: identical)."""
    differences: list[str] = []
    old_values, new_values = old_dir / _VALUES, new_dir / _VALUES
    if old_values.exists() or new_values.exists():
        if not (old_values.exists() and new_values.exists()):
            differences.append(f"{_VALUES}: only in one of the folders")
        elif old_values.read_bytes() != new_values.read_bytes():
            differences.append(f"{_VALUES}: the values differ")
    try:
        old = read_json(old_dir / RESULTS_FILE)
        new = read_json(new_dir / RESULTS_FILE)
    except (OSError, ValueError) as exc:
        differences.append(f"{RESULTS_FILE}: cannot compare ({exc})")
        return differences
    if isinstance(old, dict) and isinstance(new, dict):
        old = {k: v for k, v in old.items() if k not in VOLATILE_RESULTS}
        new = {k: v for k, v in new.items() if k not in VOLATILE_RESULTS}
    differences.extend(f"{RESULTS_FILE}: {d}" for d in flat_diff(old, new))
    return differences


def _load_yaml(path: Path) -> Any:
    """Plain data from a YAML file Hydra wrote (interpolations left as text)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _config_diff(old_dir: Path, new_dir: Path) -> list[str]:
    try:
        old = _load_yaml(old_dir / ".hydra" / "config.yaml")
        new = _load_yaml(new_dir / ".hydra" / "config.yaml")
    except Exception:  # an unreadable recorded config: nothing to compare
        return []
    return flat_diff(old, new)


def _environment_diff(old_dir: Path, new_dir: Path) -> list[str]:
    try:
        old = read_json(old_dir / ENVIRONMENT_FILE)
        new = read_json(new_dir / ENVIRONMENT_FILE)
    except (OSError, ValueError):
        return [f"{ENVIRONMENT_FILE}: not in the recorded folder (a job of an older version)"]
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    keep = ("packages", "git", "python", "hostname", "cache", "key_format_version", "functions")
    return flat_diff({k: old.get(k) for k in keep}, {k: new.get(k) for k in keep})


def _show(title: str, lines: list[str]) -> None:
    if not lines:
        return
    print(f"  {title}:")
    for line in lines[:_SHOWN]:
        print(f"    {line}")
    if len(lines) > _SHOWN:
        print(f"    ... and {len(lines) - _SHOWN} more")


def replay(args: list[str]) -> int:
    """The ``--replay`` command (see the module docstring)."""
    if not args or args[0].startswith("-"):
        print("usage: expcache --replay RUN_DIR [OVERRIDE ...]", file=sys.stderr)
        return 2
    run_dir, extra = Path(args[0]), list(args[1:])
    recorded = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = _load_yaml(recorded)
    except Exception as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(
            f"expcache: --replay {run_dir}: cannot read {recorded} ({why}); RUN_DIR must be a "
            "job folder (one run, or one numbered job of a sweep)",
            file=sys.stderr,
        )
        return 2
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        print(f"expcache: --replay: {recorded} is not a list of overrides", file=sys.stderr)
        return 2
    target = next((o.split("=", 1)[1] for o in extra if o.startswith("hydra.run.dir=")), None)
    if target is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target = str(run_dir.parent / f"{run_dir.name}.replay-{stamp}")
        extra.append(f"hydra.run.dir={target}")
    new_dir = Path(target)
    command = [sys.executable, "-m", "expcache.app.main", *overrides, *extra]
    print(f"expcache: replaying {run_dir} into {new_dir}", flush=True)
    proc = subprocess.run(command, check=False, env=dict(os.environ))
    if proc.returncode != 0 or not (new_dir / STATS_FILE).is_file():
        print(f"expcache: --replay: the replayed job failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    try:
        status = read_json(new_dir / STATS_FILE).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status != "completed":
        print(f"expcache: --replay: the replayed job did not complete ({status})", file=sys.stderr)
        return 1
    differences = compare_results(run_dir, new_dir)
    if differences:
        print(f"expcache: replay of {run_dir}: results DIFFER ({new_dir})")
        _show("results", differences)
    else:
        print(f"expcache: replay of {run_dir}: results identical ({new_dir})")
    _show("config differs from the recorded one", _config_diff(run_dir, new_dir))
    _show("environment differs from the recorded one", _environment_diff(run_dir, new_dir))
    return 1 if differences else 0
