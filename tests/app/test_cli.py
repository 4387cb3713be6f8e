"""The installed ``expcache`` console script, run for real in subprocesses.

The Compose API sets no HydraConfig and creates no output folder, so the script itself is
tested: help, printed config, one run's folder, clean errors, the sweep-summary flag, the
package list, and a wheel installed into a throwaway venv (configs found outside the checkout).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from expcache.app.records import STATS_FILE, SUMMARY_FILE, write_json
from expcache.stats import CacheStats

from ..conftest import DEFAULT_PORT
from .helpers import REPO, SCRIPT, error_text, expcache, names_key, read


@pytest.fixture(scope="module")
def script() -> Path:
    if not SCRIPT.exists():
        pytest.fail(f"console script not installed next to {sys.executable}: pip install -e .")
    return SCRIPT


@pytest.mark.slow
def test_help_lists_the_groups_and_their_options(script: Path, tmp_path: Path) -> None:
    proc = expcache("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "cache: disk, memcached, memory, none" in out
    assert "policy: deterministic, stochastic" in out
    assert "experiment: " in out
    assert "demo_memcached" in out
    assert "task: " in out
    assert "--sweep-summary" in out
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "schema" not in groups  # the ConfigStore schemas are not offered as options


@pytest.mark.slow
def test_cfg_job_prints_a_fully_resolved_config(script: Path, tmp_path: Path) -> None:
    proc = expcache(
        "--cfg", "job", "--resolve", "cache=memcached", "policy=stochastic", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)  # plain YAML: no live objects, no interpolations left
    assert cfg["cache"]["servers"] == [f"127.0.0.1:{DEFAULT_PORT}"]
    assert cfg["cache"]["signing_key"] is None  # the core reads $EXPCACHE_SIGNING_KEY itself
    assert cfg["cache"]["tls"] is False and cfg["cache"]["tls_ca_file"] is None
    assert cfg["policy"]["min_repetitions"] == 3
    assert "${" not in proc.stdout
    disk = yaml.safe_load(expcache("--cfg", "job", "--resolve", cwd=tmp_path).stdout)
    assert disk["cache"]["directory"] is None  # null: the per-user default, chosen by the core


@pytest.mark.slow
def test_single_run_leaves_config_results_and_stats(script: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = expcache(
        f"hydra.run.dir={run_dir}", "task=demo", "seed=7", "task.n_subsets=4", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["seed"] == 7
    assert saved["cache"]["timeout"] == 60.0  # every option, with the constructor's default
    results = read(run_dir / "results.json")
    stats = read(run_dir / STATS_FILE)
    assert results["seed"] == stats["seed"] == 7
    assert results["n_calls"] == 4
    assert stats["status"] == "completed"
    assert stats["functions"]["utility"]["calls"] == 4
    assert stats["backend"]["directory"] == str(tmp_path / "usercache")
    assert stats["job"]["choices"]["cache"] == "disk"
    assert (tmp_path / "usercache").is_dir()  # the per-user default was used


@pytest.mark.slow
def test_bad_value_is_one_clean_message_and_a_failing_exit(script: Path, tmp_path: Path) -> None:
    args = (
        f"hydra.run.dir={tmp_path / 'run'}",
        "task=demo",
        "policy=stochastic",
        "policy.min_repetitions=0",
    )
    proc = expcache(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert names_key(error_text(proc.stderr), "policy.min_repetitions") and ">= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    full = expcache(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0
    assert "Traceback" in full.stderr
    assert "ConfigError" in full.stderr


@pytest.mark.slow
def test_typo_on_the_command_line_names_the_key(script: Path, tmp_path: Path) -> None:
    proc = expcache(f"hydra.run.dir={tmp_path / 'run'}", "cache.timout=3", cwd=tmp_path)
    assert proc.returncode != 0
    assert "timout" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.memcached
def test_unreachable_memcached_with_strict_exits_cleanly(
    script: Path, tmp_path: Path, memcached_factory
) -> None:
    server = memcached_factory()
    server.kill()
    proc = expcache(
        f"hydra.run.dir={tmp_path / 'run'}",
        "task=demo",
        "cache=memcached",
        f"cache.servers=[{server.address}]",
        "cache.strict=true",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert f"{server.address} is unreachable at start" in proc.stderr
    assert "cache.strict=false" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert read(tmp_path / "run" / STATS_FILE)["status"] == "failed"


@pytest.mark.slow
def test_sweep_summary_flag_rebuilds_the_summary(script: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for num, hits in enumerate([0, 4]):
        total = CacheStats(hits=hits, misses=4 - hits).as_dict()
        write_json(
            sweep / str(num) / STATS_FILE,
            {
                "status": "completed",
                "seed": num,
                "job": {"num": num},
                "functions": {"u": total},
                "total": total,
            },
        )
    proc = expcache("--sweep-summary", str(sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs (0 failed), 8 calls, 4 hits" in proc.stdout
    assert read(sweep / SUMMARY_FILE)["total"]["hits"] == 4
    missing = expcache("--sweep-summary", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "sweep_dir=" in missing.stderr and "Traceback" not in missing.stderr


def test_every_python_package_is_listed_for_the_wheel() -> None:
    """setuptools cannot combine `find` with the conf/ mapping: the list must be complete."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    src = REPO / "src"
    packages = {
        ".".join(d.relative_to(src).parts)
        for d in (src / "expcache").rglob("*")
        if d.is_dir() and any(d.glob("*.py")) and "__pycache__" not in d.parts
    }
    packages.add("expcache")
    missing = sorted(packages - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_installed_wheel_finds_its_configs(tmp_path: Path) -> None:
    """Build a wheel from a copy of the checkout, install it in a fresh venv, run it elsewhere."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    shutil.copytree(REPO / "conf", source / "conf", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        timeout=600,
    )
    wheel = next((tmp_path / "dist").glob("expcache-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "-q", "install", str(wheel)],
        check=True,
        timeout=600,
    )

    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import expcache.app.main as c; print(c.__file__); print(c.config_dir())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv))  # the installed copy, not the checkout
    assert where[1].startswith(str(venv))
    shipped = {p.relative_to(Path(where[1])) for p in Path(where[1]).rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}

    installed = venv / "bin" / "expcache"
    assert (
        "cache: disk, memcached, memory, none"
        in expcache("--help", cwd=tmp_path, script=installed).stdout
    )
    proc = expcache(
        f"hydra.run.dir={tmp_path / 'run'}",
        "task=demo",
        "cache=memory",
        "task.n_subsets=3",
        cwd=tmp_path,
        script=installed,
    )
    assert proc.returncode == 0, proc.stderr
    assert read(tmp_path / "run" / STATS_FILE)["functions"]["utility"]["calls"] == 3
