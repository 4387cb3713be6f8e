"""Helpers of the app tests: the real conf/, the installed console script, error checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expcache.app.main import config_dir

REPO = Path(__file__).resolve().parents[2]
CONF = config_dir()
SCRIPT = Path(sys.executable).parent / "expcache"


def expcache(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    script: Path = SCRIPT,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run the console script with a clean environment (own cache dir, no signing key)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    full_env["EXPCACHE_DIR"] = str(cwd / "usercache")
    full_env.update(env or {})
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read(path: Path) -> Any:
    return json.loads(path.read_text())


# Options whose core owners (Memoized and its key maker, Serde, RepetitionPolicy) do not raise
# ConfigError(param=...) yet: the app can only show such an error under its section
# ("policy: lease_ttl=0.0: ..."). The backends do (every cache option of a backend must be
# named in full); drop this once the core's other validators set param= too.
def names_key(text: str, key: str) -> bool:
    """Whether an error message names the config key ``key`` (``cache.timeout``): every core
    validator raises ConfigError(param=...), which the app relocates under its section."""
    return key in text


def error_text(stderr: str) -> str:
    """The console script's stderr without Hydra's echo of the overrides (``Error executing
    job with overrides: [...]``), which names every key given and so proves nothing."""
    echo = "Error executing job with overrides:"
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(echo))


def loo_task_params(**extra: Any) -> dict[str, Any]:
    """``ValuationTask`` keyword arguments of a small run built by hand (as the runner does):
    leave-one-out on 12 synthetic points, logistic regression, accuracy; ``extra`` on top."""
    return {
        "data": {
            "_target_": "expcache.app.tasks.valuation.SyntheticData",
            "n_samples": 40,
            "train_size": 12,
        },
        "model": {"_target_": "sklearn.linear_model.LogisticRegression"},
        "scorer": {
            "_target_": "expcache.app.tasks.valuation.SupervisedScoring",
            "scoring": "accuracy",
            "range": [0.0, 1.0],
        },
        "method": {"_target_": "pydvl.valuation.methods.loo.LOOValuation"},
        "parallel": {"_target_": "expcache.app.tasks.valuation.JoblibParallel"},
        "name": "u",
        **extra,
    }
