"""The default job, exactly as a user first meets it: ``expcache`` with no task or method
overrides, run twice in subprocesses on a fresh disk cache.

The issue's promise: the first run values the default data on a cold cache; the second run
answers every utility call from the cache but the failed fits (never cached), evaluates
nothing new and reports the hits; and the values of both runs are equal, bit for bit. The
only override is where the files go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.pydvl]

SCRIPT = Path(sys.executable).parent / "expcache"
FILES = ("results.json", "cache_stats.json", "environment.json", "values.csv", "values.png")


def _run_default_job(out: Path, cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: a user's EXPCACHE_*/HYDRA_* settings must not leak into the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    env.update(EXPCACHE_DIR=str(cache), HYDRA_FULL_ERROR="1")
    return subprocess.run(
        [str(SCRIPT), f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _counters(out: Path) -> dict[str, Any]:
    record = json.loads((out / "cache_stats.json").read_text())
    assert record["status"] == "completed", record["error"]
    total: dict[str, Any] = record["total"]
    assert record["functions"]["pydvl_utility"] == total  # the utility is the only function
    return total


@pytest.mark.timeout(660)
def test_default_job_twice_second_run_only_hits_and_gives_the_same_values(
    tmp_path: Path,
) -> None:
    pytest.importorskip("pydvl", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
    if not SCRIPT.exists():
        pytest.fail(f"console script not installed next to {sys.executable}: pip install -e .")
    cache = tmp_path / "cache"
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"

    cold_proc = _run_default_job(cold_dir, cache, tmp_path)
    assert cold_proc.returncode == 0, cold_proc.stderr[-3000:]
    warm_proc = _run_default_job(warm_dir, cache, tmp_path)
    assert warm_proc.returncode == 0, warm_proc.stderr[-3000:]

    for out in (cold_dir, warm_dir):
        for name in FILES:
            assert (out / name).is_file(), f"{out.name}/{name} missing"
            assert (out / name).stat().st_size > 0, f"{out.name}/{name} is empty"
    assert (cold_dir / "values.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # It really is the default job: TMC-Shapley on breast cancer, on the embedded disk cache
    # in EXPCACHE_DIR (nothing else was overridden).
    cold_results = json.loads((cold_dir / "results.json").read_text())
    warm_results = json.loads((warm_dir / "results.json").read_text())
    assert cold_results["method"] == "Truncated Monte Carlo Shapley"
    assert (cold_results["data"], cold_results["n_jobs"]) == ("breast_cancer", 1)
    backend = json.loads((cold_dir / "cache_stats.json").read_text())["backend"]
    assert (backend["option"], Path(backend["directory"])) == ("disk", cache)
    assert cache.is_dir()

    cold, warm = _counters(cold_dir), _counters(warm_dir)
    assert cold["evaluations"] > 0 and cold["sets"] > 0
    assert cold["errors"] == cold["timeouts"] == cold["corrupt"] == 0
    # Same seed, one process: the second run makes exactly the same calls ...
    assert warm["calls"] == cold["calls"]
    # ... and evaluates nothing new: every result of the first run was stored (the app's
    # deterministic policy stores everything, however fast, so a busy machine cannot leave
    # results unstored). Failed fits -- the one-class prefixes of TMC's permutations, which
    # LogisticRegression cannot fit -- are never stored: they, and only they, run again, and
    # fail again.
    assert cold["below_threshold"] == 0 and cold["sets"] == cold["misses"]
    assert warm["misses"] == warm["repeats"] == warm["sets"] == 0
    assert warm["evaluations"] == warm["failed"] == cold["failed"]
    assert cold["failed"] < 0.1 * cold["calls"]
    assert warm["hits"] == warm["calls"] - warm["failed"] > 0
    assert "hits" in warm_proc.stdout and f"{warm['hits']} hits" in warm_proc.stdout
    assert "0 misses" in warm_proc.stdout
    # What the run folder records for a reviewer.
    env = json.loads((warm_dir / "environment.json").read_text())
    assert env["packages"]["pydvl"] and env["cache"]["directory"] == str(cache)
    assert len(env["functions"]["pydvl_utility"]) == 1  # one utility, one dataset

    # Deterministic utility: the cached values are the computed ones, exactly.
    assert (warm_dir / "values.csv").read_bytes() == (cold_dir / "values.csv").read_bytes()
    assert warm_results["values"] == cold_results["values"]
