"""The Hydra app in-process: the real conf/ composed through the Compose API.

Every group option and every experiment is composed and planned; the context applies the
policy and reports what the cache did; an unreachable store is one warning (or an error when
strict). Bad values are in test_bad_inputs.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from expcache import Memoized, RepetitionPolicy
from expcache.app import CacheContext, MemoPolicy, build_context, plan, run
from expcache.app.resolvers import register_resolvers
from expcache.app.schemas import CACHE_SCHEMAS, POLICY_SCHEMAS, all_schemas
from expcache.app.tasks.demo import make_subsets, utility
from expcache.backends import DiskBackend, MemcachedBackend, MemoryBackend, NullBackend
from expcache.errors import BackendUnavailable
from expcache.stats import CacheStats

from .conftest import Compose
from .helpers import CONF

CACHE_OPTIONS = sorted(p.stem for p in (CONF / "cache").glob("*.yaml"))
POLICY_OPTIONS = sorted(p.stem for p in (CONF / "policy").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TASK_OPTIONS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
BACKEND_TYPES = {
    "memcached": MemcachedBackend,
    "disk": DiskBackend,
    "memory": MemoryBackend,
    "none": NullBackend,
}
SIGNING_KEY = "k" * 32


def _f(x: int, job: int = 0) -> int:
    return x * 10


def _schema_of(node: DictConfig) -> Any:
    return getattr(OmegaConf.get_type(node), "__schema__", None)


def _needs_pydvl(cfg: DictConfig) -> None:
    if "valuation" in str(cfg.task._target_):
        pytest.importorskip("pydvl", reason="planning the valuation task imports pyDVL")


# -- every option, every experiment ----------------------------------------------------------
def test_the_options_on_disk_are_the_schemas() -> None:
    all_schemas()
    assert CACHE_OPTIONS == sorted(CACHE_SCHEMAS) == ["disk", "memcached", "memory", "none"]
    assert POLICY_OPTIONS == sorted(POLICY_SCHEMAS) == ["deterministic", "stochastic"]
    assert {"demo", "valuation"} <= set(TASK_OPTIONS)
    assert EXPERIMENTS, "conf/experiment/ has no bundle"


@pytest.mark.parametrize("policy", POLICY_OPTIONS)
@pytest.mark.parametrize("cache", CACHE_OPTIONS)
def test_every_cache_and_policy_option_composes_and_plans(
    cfg_of: Compose, cache: str, policy: str, cache_dir: Path
) -> None:
    cfg = cfg_of(f"cache={cache}", f"policy={policy}")
    assert _schema_of(cfg.cache) is CACHE_SCHEMAS[cache]  # typed: typos are rejected
    assert _schema_of(cfg.policy) is POLICY_SCHEMAS[policy]
    p = plan(cfg)
    assert type(p.backend) is BACKEND_TYPES[cache]
    memo = p.policy.memoize(_f, p.backend)
    assert isinstance(memo, Memoized)
    if policy == "stochastic":
        assert memo.repeat == RepetitionPolicy()  # the YAML changes none of its defaults
    else:
        assert memo.repeat is None
        # the YAML changes nothing: every result is stored (the app's utilities are expensive)
        assert memo.time_threshold == 0.0
    if cache == "disk":
        assert isinstance(p.backend, DiskBackend)
        assert p.backend.directory == cache_dir  # the per-user default, chosen by the core
        assert not cache_dir.exists()  # planning did no I/O


@pytest.mark.parametrize("task", TASK_OPTIONS)
def test_every_task_option_composes_and_plans(compose_raw: Compose, task: str) -> None:
    cfg = compose_raw(f"task={task}")
    _needs_pydvl(cfg)
    assert plan(cfg).seed == 0
    json.dumps(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_plans(compose_raw: Compose, experiment: str) -> None:
    cfg = compose_raw(f"experiment={experiment}")
    assert cfg != compose_raw(), f"experiment={experiment} changes nothing"
    _needs_pydvl(cfg)
    assert isinstance(plan(cfg).seed, int)
    json.dumps(OmegaConf.to_container(cfg, resolve=True))  # fully resolvable to plain data


def test_experiment_bundles_select_their_groups(compose_raw: Compose) -> None:
    assert isinstance(plan(compose_raw("experiment=demo_memcached")).backend, MemcachedBackend)
    stochastic = plan(compose_raw("experiment=demo_stochastic"))
    assert stochastic.policy.repeat == RepetitionPolicy(
        min_repetitions=3, rtol_stderr=0.05, max_repetitions=10
    )


def test_composed_config_resolves_to_primitives(cfg_of: Compose) -> None:
    cfg = cfg_of("cache=memcached", "cache.namespace=n1")
    data = OmegaConf.to_container(cfg, resolve=True)
    assert json.loads(json.dumps(data)) == data


def test_default_output_folders_do_not_collide_within_a_second() -> None:
    """Hydra's default folder names have one-second resolution (hydra#1607)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    assert isinstance(raw, dict)
    assert raw["hydra"]["run"]["dir"].endswith("${now:%H-%M-%S.%f}")
    assert raw["hydra"]["sweep"]["dir"].endswith("${now:%H-%M-%S.%f}")


def test_planned_tls_options_reach_the_backend(cfg_of: Compose, tmp_path: Path) -> None:
    """TLS is configurable from YAML: the options are MemcachedBackend's, so the backend (and
    its own start-up probe) uses them."""
    import ssl

    p = plan(cfg_of("cache=memcached", "cache.tls=true"))
    assert isinstance(p.backend, MemcachedBackend)
    assert p.backend.tls is True
    assert isinstance(p.backend.tls_context, ssl.SSLContext)
    assert plan(cfg_of("cache=memcached")).backend.tls is False  # type: ignore[attr-defined]


# -- resolvers -----------------------------------------------------------------------------------
def test_resolvers_register_idempotently_and_return_strings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register_resolvers()
    register_resolvers()  # a second registration (another job in this process) is a no-op
    monkeypatch.setenv("EXPCACHE_DIR", str(tmp_path / "a"))
    node = OmegaConf.create({"dir": "${expcache.cache_dir:}"})
    assert node.dir == str(tmp_path / "a")
    monkeypatch.setenv("EXPCACHE_DIR", str(tmp_path / "b"))
    assert node.dir == str(tmp_path / "b")  # not cached: each process/job sees its own env


# -- the context -------------------------------------------------------------------------------
def test_context_applies_policy_namespace_and_overrides(cfg_of: Compose) -> None:
    cfg = cfg_of(
        "cache=memory",
        "cache.namespace=ns1",
        "policy.time_threshold=0",
        "policy.ignore_args=[job]",
    )
    ctx = build_context(plan(cfg))
    memo = ctx.wrap(_f)
    assert memo.backend is ctx.backend
    assert memo.cache_key(1).startswith("ns1:")
    assert memo(1, job=1) == 10
    assert memo(1, job=2) == 10  # `job` is not part of the key: a hit
    assert (memo.stats.misses, memo.stats.hits) == (1, 1)
    other = ctx.wrap(_f, name="custom", time_threshold=0.5, signature=b"sig")
    assert (other.time_threshold, other.signature, other.__name__) == (0.5, b"sig", "custom")
    assert other.backend is ctx.backend  # one backend per run


def test_context_uses_the_stochastic_policy(cfg_of: Compose) -> None:
    ctx = build_context(
        plan(
            cfg_of(
                "cache=memory",
                "policy=stochastic",
                "policy.min_repetitions=2",
                "policy.max_repetitions=4",
            )
        )
    )
    memo = ctx.wrap(_f)
    assert memo.repeat == RepetitionPolicy(min_repetitions=2, max_repetitions=4)
    assert [memo(3) for _ in range(3)] == [30.0, 30.0, 30.0]
    assert (memo.stats.misses, memo.stats.repeats, memo.stats.hits) == (1, 1, 1)


def test_summary_counts_per_name_and_in_total_and_merges_worker_stats(cfg_of: Compose) -> None:
    ctx = build_context(plan(cfg_of("cache=memory", "policy.time_threshold=0")))
    a1, a2, b = ctx.wrap(_f, name="a"), ctx.wrap(_f, name="a", version="2"), ctx.wrap(_f, name="b")
    a1(1)
    a1(1)
    a2(1)
    b(2)
    ctx.add_stats("a", CacheStats(hits=5, misses=1))
    ctx.add_stats("workers", CacheStats(hits=7))
    summary = json.loads(json.dumps(ctx.summary()))
    assert summary["functions"]["a"]["hits"] == 1 + 5
    assert summary["functions"]["a"]["misses"] == 2 + 1
    assert summary["functions"]["b"]["misses"] == 1
    assert summary["functions"]["workers"]["hits"] == 7
    assert summary["total"]["calls"] == 4 + 6 + 7
    assert summary["backend"]["backend"] == "memory"
    assert summary["policy"]["option"] == "deterministic"
    assert summary["policy"]["time_threshold"] == 0


def test_signing_key_from_the_environment_is_used_and_not_recorded(
    cfg_of: Compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXPCACHE_SIGNING_KEY", SIGNING_KEY)
    cfg = cfg_of("cache=memory", "policy.time_threshold=0", "task.n_subsets=2", "task.n_iter=1")
    assert cfg.cache.signing_key is None  # the YAML never copies the variable
    ctx = build_context(plan(cfg))
    assert ctx.wrap(_f).serde.signing_key == SIGNING_KEY.encode()
    run(cfg, output_dir=tmp_path / "job")
    text = (tmp_path / "job" / "cache_stats.json").read_text()
    assert json.loads(text)["signed"] is True
    assert SIGNING_KEY not in text
    assert SIGNING_KEY not in (tmp_path / "job" / "results.json").read_text()


def test_context_is_a_plain_class_with_the_agreed_interface() -> None:
    ctx = CacheContext(NullBackend(), MemoPolicy({"time_threshold": 0}))
    memo = ctx.wrap(_f)
    assert memo(2) == 20
    assert ctx.summary()["functions"]["_f"]["misses"] == 1
    assert ctx.summary()["policy"] == {"option": "deterministic", "time_threshold": 0}


# -- reachability at start ---------------------------------------------------------------------
@pytest.mark.memcached
def test_unreachable_memcached_warns_once_and_runs_uncached(
    cfg_of: Compose, memcached_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_factory()
    server.kill()
    cfg = cfg_of(
        "cache=memcached", f"cache.servers=[{server.address}]", "cache.connect_timeout=0.5"
    )
    with caplog.at_level(logging.WARNING, logger="expcache"):
        result = run(cfg, output_dir=tmp_path / "job")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "running UNCACHED" in warnings[0].getMessage()
    assert server.address in warnings[0].getMessage()
    stats = result["cache_stats"]
    assert stats["backend"]["backend"] == "none"
    assert stats["backend"]["configured"]["servers"] == [server.address]
    assert "unreachable at start" in stats["backend"]["fallback"]
    assert stats["total"]["misses"] == stats["total"]["calls"] == 20
    assert stats["total"]["errors"] == stats["total"]["timeouts"] == 0  # no per-call failures


def test_unusable_disk_directory_warns_or_fails_when_strict(
    cfg_of: Compose, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A path that passes every check before work but cannot be created (even by root):
    # /proc refuses new directories. (A file in the way is a ConfigError: tests/app/
    # test_bad_inputs.py.)
    unusable = Path("/proc/expcache-unusable/cache")
    cfg = cfg_of("cache=disk", f"cache.directory={unusable}")
    with caplog.at_level(logging.WARNING, logger="expcache"):
        ctx = build_context(plan(cfg))
    assert isinstance(ctx.backend, NullBackend)
    assert ctx.backend_info["configured"]["directory"] == str(unusable)
    assert len(caplog.records) == 1
    strict = cfg_of("cache=disk", f"cache.directory={unusable}", "cache.strict=true")
    with pytest.raises(BackendUnavailable, match=r"cache\.strict=false"):
        build_context(plan(strict))


@pytest.mark.memcached
def test_unreachable_memcached_with_strict_fails_before_the_task(
    cfg_of: Compose, memcached_factory: Any, tmp_path: Path
) -> None:
    server = memcached_factory()
    server.kill()
    cfg = cfg_of("cache=memcached", f"cache.servers=[{server.address}]", "cache.strict=true")
    with pytest.raises(BackendUnavailable, match=r"cache\.strict=false") as info:
        run(cfg, output_dir=tmp_path / "job")
    assert server.address in str(info.value)
    assert not (tmp_path / "job" / "results.json").exists()


@pytest.mark.memcached
def test_a_dead_cluster_node_is_reported_and_the_live_one_used(
    cfg_of: Compose, memcached: Any, memcached_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = memcached_factory()
    dead.kill()
    cfg = cfg_of("cache=memcached", f"cache.servers=[{memcached.address},{dead.address}]")
    with caplog.at_level(logging.WARNING, logger="expcache"):
        ctx = build_context(plan(cfg))
    assert isinstance(ctx.backend, MemcachedBackend)
    assert ctx.backend_info["unreachable_at_start"] == [dead.address]
    assert [r.getMessage() for r in caplog.records if dead.address in r.getMessage()]


def test_the_probe_is_the_backends_own(cfg_of: Compose) -> None:
    """No backend is special-cased: the app asks the backend it planned to probe itself."""
    calls: list[str] = []

    class Probed(MemoryBackend):
        def probe(self) -> list[tuple[str, str]]:
            calls.append("probe")
            return [("node-a", "refused")]

    p = plan(cfg_of("cache=memory"))
    p = type(p)(**{**p.__dict__, "backend": Probed()})
    ctx = build_context(p)
    assert calls == ["probe"]
    assert isinstance(ctx.backend, NullBackend)  # its only node failed: uncached
    assert ctx.backend_info["fallback"] == "unreachable at start: refused"


@pytest.mark.memcached
def test_reachable_memcached_is_used(cfg_of: Compose, memcached: Any, tmp_path: Path) -> None:
    cfg = cfg_of(
        "cache=memcached", f"cache.servers=[{memcached.address}]", "policy.time_threshold=0"
    )
    first = run(cfg, output_dir=tmp_path / "a")["cache_stats"]["total"]
    second = run(cfg, output_dir=tmp_path / "b")["cache_stats"]["total"]
    assert (first["misses"], first["sets"], first["hits"]) == (20, 20, 0)
    assert (second["hits"], second["misses"]) == (20, 0)
    assert memcached.stat("curr_items") >= 20


# -- run() and the demo task -------------------------------------------------------------------
def test_run_writes_results_and_stats_and_later_seeds_hit(cfg_of: Compose, tmp_path: Path) -> None:
    cfg0 = cfg_of("seed=0", "policy.time_threshold=0")
    cfg1 = cfg_of("seed=1", "policy.time_threshold=0")
    r0 = run(cfg0, output_dir=tmp_path / "s0")
    r1 = run(cfg1, output_dir=tmp_path / "s1")
    for name, r in (("s0", r0), ("s1", r1)):
        results = json.loads((tmp_path / name / "results.json").read_text())
        stats = json.loads((tmp_path / name / "cache_stats.json").read_text())
        assert results == r["results"]
        assert stats["status"] == "completed"
        assert stats["seed"] == r["seed"] == results["seed"]
    assert r0["cache_stats"]["total"]["hits"] == 0
    assert r1["cache_stats"]["total"]["hits"] == 10  # the shared half of the subsets
    assert r1["cache_stats"]["total"]["misses"] == 10
    # hits return exactly what the function computes
    t = cfg1.task
    for subset, value in zip(r1["results"]["subsets"], r1["results"]["utilities"], strict=True):
        assert value == utility(
            tuple(subset),
            data_seed=t.data_seed,
            n_points=t.n_points,
            n_features=t.n_features,
            n_iter=t.n_iter,
        )
    assert r0["results"]["utilities"][:10] == r1["results"]["utilities"][:10]


def test_demo_subsets_share_a_seed_independent_part() -> None:
    kw: dict[str, Any] = {"n_points": 50, "subset_size": 5, "n_subsets": 10, "shared_fraction": 0.3}
    s0, s1 = make_subsets(0, **kw), make_subsets(1, **kw)
    assert s0[:3] == s1[:3]
    assert not set(s0[3:]) & set(s1[3:])
    assert len(set(s0)) == len(s0) == 10
    assert all(list(s) == sorted(s) and len(s) == 5 for s in s0)
    assert make_subsets(0, **kw) == s0  # deterministic


def test_a_function_task_is_bound_to_its_signature(cfg_of: Compose, tmp_path: Path) -> None:
    """A plain function ``f(*, ctx, output_dir, seed, **options)`` is a task too."""
    cfg = cfg_of("cache=memory", "policy.time_threshold=0")
    OmegaConf.set_struct(cfg, False)
    cfg.task = {"_target_": f"{__name__}.function_task", "factor": 3}
    assert run(cfg, output_dir=tmp_path)["results"] == {"value": 60, "seed": 0}


def function_task(*, ctx: CacheContext, output_dir: Path, seed: int, factor: int = 1) -> Any:
    return {"value": ctx.wrap(_f)(2) * factor, "seed": seed}


def test_run_outside_hydra_needs_an_output_dir(cfg_of: Compose) -> None:
    from expcache import ConfigError

    with pytest.raises(ConfigError, match="output_dir"):
        run(cfg_of("cache=memory"))


def test_a_bad_value_stops_the_run_before_any_work(
    cfg_of: Compose, tmp_path: Path, cache_dir: Path
) -> None:
    from expcache import ConfigError

    out = tmp_path / "job"
    cfg = cfg_of("policy=stochastic", "policy.min_repetitions=0")
    with pytest.raises(ConfigError, match=r"min_repetitions"):
        run(cfg, output_dir=out)
    assert not cache_dir.exists()  # no backend was opened
    assert not (out / "results.json").exists()  # the task never ran
    record = json.loads((out / "cache_stats.json").read_text())
    assert record["status"] == "failed"
    assert "min_repetitions" in record["error"]
    assert record["total"]["calls"] == 0
