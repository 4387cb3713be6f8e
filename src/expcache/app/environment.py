"""``environment.json``: what a reviewer needs to reproduce a job, written into its folder.

The config, the overrides and the seed are already in ``.hydra/``; what they do not say is
*which code and which libraries* ran them, *where* and *against which cache*: Python and the
platform, the host, the command line and working directory, the versions of expcache and of
every package of the stack that is installed, the git commit of the working directory's
repository and whether its tracked files had uncommitted changes (``null`` outside a
repository or without git), the resolved cache directory or servers, the key format and the
identity digest of every memoized function (two runs whose identities differ never share
entries). Nothing secret is recorded: of ``EXPCACHE_SIGNING_KEY`` only whether it is set.

Untracked files do not make a tree dirty here: Hydra's own ``outputs/`` and ``multirun/``
folders live in the working directory and would mark every run.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ..keys import KEY_FORMAT_VERSION

__all__ = ["ENVIRONMENT_FILE", "STACK", "environment", "git_state", "package_versions"]

ENVIRONMENT_FILE = "environment.json"
# Distributions whose version can change a result or a key, in the order a reader scans them.
STACK = (
    "expcache",
    "numpy",
    "hydra-core",
    "omegaconf",
    "pymemcache",
    "diskcache",
    "xxhash",
    "pydvl",
    "scikit-learn",
    "scipy",
    "pandas",
    "joblib",
    "threadpoolctl",
    "matplotlib",
    "tqdm",
    "cloudpickle",
    "hydra-joblib-launcher",
    "hydra-optuna-sweeper",
    "optuna",
)
_GIT_TIMEOUT = 10.0


def package_versions(names: tuple[str, ...] = STACK) -> dict[str, str]:
    """Installed version of each distribution of ``names`` that is present."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(cwd: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """``{root, commit, dirty}`` of the repository holding ``cwd`` (default: the working
    directory), or None outside one (or without git). ``commit`` is None in a repository
    without commits; ``dirty`` counts changes to tracked files only."""
    where = Path(cwd) if cwd is not None else Path.cwd()
    if shutil.which("git") is None:
        return None
    root = _git(where, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    commit = _git(where, "rev-parse", "--verify", "-q", "HEAD")
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    return {
        "root": root,
        "commit": commit or None,
        "dirty": None if status is None else bool(status),
    }


def environment(
    *,
    cache: dict[str, Any] | None = None,
    functions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The record for one job; ``cache`` is the backend's description (``cache_stats.json``'s
    ``backend``), ``functions`` the identity digests per memoized function."""
    expcache_dir = os.environ.get("EXPCACHE_DIR")
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "hostname": socket.gethostname(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "packages": package_versions(),
        "git": git_state(),
        "cache": _cache_location(cache),
        "key_format_version": KEY_FORMAT_VERSION,
        "functions": functions or {},
        "env": {
            "EXPCACHE_DIR": expcache_dir,
            "EXPCACHE_SIGNING_KEY": "set" if os.environ.get("EXPCACHE_SIGNING_KEY") else None,
            "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"),
        },
    }


def _cache_location(backend: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where entries were read and written: the disk directory or the memcached servers."""
    if not backend:
        return None
    keep = ("option", "backend", "directory", "servers", "fallback", "configured")
    return {k: backend[k] for k in keep if k in backend}
