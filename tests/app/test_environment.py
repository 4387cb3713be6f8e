"""``environment.json`` in every job folder, and ``expcache --replay``, through the script.

Runs from inside a fresh git repository (commit and dirty flag of the working directory's
repository recorded) and from a plain directory (``git: null``); the values are checked
against what this interpreter reports, not against constants.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from expcache.app import CacheContext, MemoPolicy
from expcache.app.context import identity_of
from expcache.app.tasks import demo
from expcache.backends import NullBackend
from expcache.keys import KEY_FORMAT_VERSION

from .helpers import expcache, read

pytestmark = pytest.mark.slow

DEMO = ("task=demo", "task.n_subsets=4", "cache.namespace=envtest")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def _demo_identity() -> str:
    ctx = CacheContext(NullBackend(), MemoPolicy(), namespace="envtest")
    identity = identity_of(ctx.wrap(demo.utility, name="utility"))
    assert identity is not None
    return identity


def test_environment_inside_a_git_repository(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is needed for this test (apt-get install git)")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "experiment.txt").write_text("v1\n")
    _git(repo, "add", "experiment.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    head = _git(repo, "rev-parse", "HEAD")

    clean = expcache(*DEMO, f"hydra.run.dir={repo / 'outputs' / 'clean'}", cwd=repo)
    assert clean.returncode == 0, clean.stderr
    env = read(repo / "outputs" / "clean" / "environment.json")
    # Hydra's outputs/ folder is untracked: it must not make the tree dirty.
    assert env["git"] == {"root": str(repo.resolve()), "commit": head, "dirty": False}
    assert env["cwd"] == str(repo)
    assert env["command"][1:] == [*DEMO, f"hydra.run.dir={repo / 'outputs' / 'clean'}"]
    assert env["python"]["version"] == platform.python_version()
    assert env["hostname"] and env["platform"]["system"] == platform.system()
    for name in ("expcache", "numpy", "hydra-core", "omegaconf", "pymemcache", "diskcache",
                 "xxhash"):
        assert env["packages"][name] == metadata.version(name), name
    assert "not-a-package" not in env["packages"]
    assert env["key_format_version"] == KEY_FORMAT_VERSION
    assert env["functions"] == {"utility": [_demo_identity()]}
    assert env["cache"]["directory"] == str(repo / "usercache")  # untracked: not dirty
    assert env["env"]["EXPCACHE_SIGNING_KEY"] is None

    (repo / "experiment.txt").write_text("v2\n")  # a tracked file changed: dirty
    dirty = expcache(
        *DEMO, f"hydra.run.dir={repo / 'outputs' / 'dirty'}", cwd=repo,
        env={"EXPCACHE_SIGNING_KEY": "a-signing-key-of-32-characters!!"},
    )
    assert dirty.returncode == 0, dirty.stderr
    env = read(repo / "outputs" / "dirty" / "environment.json")
    assert env["git"]["commit"] == head and env["git"]["dirty"] is True
    assert env["env"]["EXPCACHE_SIGNING_KEY"] == "set"  # never the key itself
    assert "a-signing-key" not in (repo / "outputs" / "dirty" / "environment.json").read_text()


def test_environment_outside_a_repository_and_for_a_failed_job(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    if subprocess.run(["git", "rev-parse"], cwd=plain, capture_output=True).returncode == 0:
        pytest.skip(f"{plain} is inside a git repository")
    proc = expcache(*DEMO, "cache=memory", f"hydra.run.dir={plain / 'run'}", cwd=plain)
    assert proc.returncode == 0, proc.stderr
    env = read(plain / "run" / "environment.json")
    assert env["git"] is None
    assert env["cache"] == {"option": "memory", "backend": "memory"}
    # A job that fails before building a cache still records where and with what it ran.
    bad = expcache("task=demo", "task.n_subsets=0", f"hydra.run.dir={plain / 'bad'}", cwd=plain)
    assert bad.returncode != 0
    env = read(plain / "bad" / "environment.json")
    assert env["git"] is None and env["functions"] == {} and env["packages"]["numpy"]


@pytest.mark.pydvl
@pytest.mark.usefixtures("need_pydvl")
def test_replay_reruns_a_job_and_compares_its_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "job"
    args = ("data=iris", "data.train_size=12", "method=loo", "task.plot=false")
    first = expcache(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Replayed without the cache, every value is recomputed: still identical (deterministic),
    # and the replay says where the config differs from the recorded one (cache=none).
    fresh = tmp_path / "fresh"
    proc = expcache("--replay", str(run_dir), "cache=none", f"hydra.run.dir={fresh}",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"replay of {run_dir}: results identical ({fresh})" in proc.stdout
    assert "config differs from the recorded one" in proc.stdout and "cache." in proc.stdout
    assert (fresh / "values.csv").read_bytes() == (run_dir / "values.csv").read_bytes()
    assert read(fresh / "cache_stats.json")["total"]["hits"] == 0
    assert read(fresh / "environment.json")["cache"]["backend"] == "none"

    # A recorded result that does not match is reported, with the key, and exits 1.
    results = read(run_dir / "results.json")
    results["values"]["mean"] += 1.0
    (run_dir / "results.json").write_text(json.dumps(results))
    third = tmp_path / "third"
    proc = expcache("--replay", str(run_dir), f"hydra.run.dir={third}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "results DIFFER" in proc.stdout and "results.json: values.mean" in proc.stdout
    assert "values.csv" not in proc.stdout  # the values themselves still agree
    assert "config differs" not in proc.stdout  # same overrides, same config
    assert read(third / "cache_stats.json")["total"]["misses"] == 0  # from the cache

    missing = expcache("--replay", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "overrides.yaml" in missing.stderr
