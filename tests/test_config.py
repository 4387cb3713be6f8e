"""The Hydra layer in-process: the real conf/ composed through the Compose API.

Every group option and every experiment is composed and validated; bad values are rejected
before any work with the config path and what is accepted; the context applies the policy and
reports what the cache did; an unreachable memcached is one warning (or an error when strict).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf

from expcache import ConfigError, Memoized, RepetitionPolicy
from expcache.backends import (
    DiskBackend,
    MemcachedBackend,
    MemoryBackend,
    NullBackend,
    default_cache_dir,
)
from expcache.cli import config_dir
from expcache.config import CacheContext, build_context, plan, run, summarize_sweep
from expcache.config.callbacks import CacheStatsCallback
from expcache.config.records import STATS_FILE, SUMMARY_FILE, to_jsonable, write_json
from expcache.config.resolvers import register_resolvers
from expcache.config.schema import CACHE_SCHEMAS, POLICY_SCHEMAS, TASK_SCHEMAS
from expcache.errors import BackendUnavailable
from expcache.stats import CacheStats
from expcache.tasks.demo import make_subsets, utility

CONF = config_dir()
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

Compose = Callable[..., DictConfig]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user cache directory, redirected into the test's tmp folder."""
    path = tmp_path / "usercache"
    monkeypatch.setenv("EXPCACHE_DIR", str(path))
    monkeypatch.delenv("EXPCACHE_SIGNING_KEY", raising=False)
    return path


@pytest.fixture
def compose_raw(cache_dir: Path) -> Iterator[Compose]:
    """The real conf/ composed with exactly these overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.fixture
def cfg_of(compose_raw: Compose) -> Compose:
    """Composed with the demo task, whatever the default task is (no pyDVL needed)."""
    return lambda *overrides: compose_raw("task=demo", *overrides)


def _f(x: int, job: int = 0) -> int:
    return x * 10


# -- every option, every experiment ----------------------------------------------------------
def test_the_options_on_disk_are_the_schemas() -> None:
    assert CACHE_OPTIONS == sorted(CACHE_SCHEMAS) == ["disk", "memcached", "memory", "none"]
    assert POLICY_OPTIONS == sorted(POLICY_SCHEMAS) == ["deterministic", "stochastic"]
    assert "demo" in TASK_SCHEMAS
    assert "demo" in TASK_OPTIONS
    assert EXPERIMENTS, "conf/experiment/ has no bundle"


@pytest.mark.parametrize("policy", POLICY_OPTIONS)
@pytest.mark.parametrize("cache", CACHE_OPTIONS)
def test_every_cache_and_policy_option_composes_and_validates(
    cfg_of: Compose, cache: str, policy: str, cache_dir: Path
) -> None:
    cfg = cfg_of(f"cache={cache}", f"policy={policy}")
    assert OmegaConf.get_type(cfg.cache) is CACHE_SCHEMAS[cache]  # typed: typos are rejected
    assert OmegaConf.get_type(cfg.policy) is POLICY_SCHEMAS[policy]
    p = plan(cfg)
    assert type(p.backend) is BACKEND_TYPES[cache]
    assert (p.cache_option, p.policy_option) == (cache, policy)
    memo = p.factory(_f, p.backend)
    assert isinstance(memo, Memoized)
    if policy == "stochastic":
        assert memo.repeat == RepetitionPolicy(
            min_repetitions=cfg.policy.min_repetitions,
            rtol_stderr=cfg.policy.rtol_stderr,
            atol_stderr=cfg.policy.atol_stderr,
            max_repetitions=cfg.policy.max_repetitions,
        )
    else:
        assert memo.repeat is None
        assert memo.time_threshold == "auto"
    if cache == "disk":
        assert isinstance(p.backend, DiskBackend)
        assert p.backend.directory == cache_dir  # the per-user default, via the resolver
        assert not cache_dir.exists()  # validation did no I/O


@pytest.mark.parametrize(
    ("group", "option", "schema"),
    [("cache", o, s) for o, s in CACHE_SCHEMAS.items()]
    + [("policy", o, s) for o, s in POLICY_SCHEMAS.items()]
    + [("task", o, s) for o, s in TASK_SCHEMAS.items()],
)
def test_yaml_defaults_document_the_schema_defaults(
    cfg_of: Compose, group: str, option: str, schema: type
) -> None:
    """The YAML files are what users read: they must not drift from the dataclass defaults."""
    composed = OmegaConf.to_container(cfg_of(f"{group}={option}")[group], resolve=True)
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    assert isinstance(composed, dict)
    assert isinstance(defaults, dict)
    if option == "disk":
        assert composed.pop("dir") == str(default_cache_dir())  # ${expcache.cache_dir:}
        defaults.pop("dir")
    assert composed == defaults


@pytest.mark.parametrize("task", TASK_OPTIONS)
def test_every_task_option_composes_and_validates(compose_raw: Compose, task: str) -> None:
    cfg = compose_raw(f"task={task}")
    assert plan(cfg).seed == 0  # validation imports no task code (no pyDVL)
    json.dumps(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose_raw: Compose, experiment: str) -> None:
    cfg = compose_raw(f"experiment={experiment}")
    base = compose_raw()
    assert cfg != base, f"experiment={experiment} changes nothing"
    p = plan(cfg)
    assert isinstance(p.seed, int)
    json.dumps(OmegaConf.to_container(cfg, resolve=True))  # fully resolvable to plain data


def test_experiment_bundles_select_their_groups(compose_raw: Compose) -> None:
    assert plan(compose_raw("experiment=demo_memcached")).cache_option == "memcached"
    stochastic = plan(compose_raw("experiment=demo_stochastic"))
    assert stochastic.policy_option == "stochastic"
    assert stochastic.field("policy", "max_repetitions") == 10


def test_composed_config_resolves_to_primitives(cfg_of: Compose, cache_dir: Path) -> None:
    cfg = cfg_of("cache=memcached", "cache.namespace=n1")
    data = OmegaConf.to_container(cfg, resolve=True)
    assert json.loads(json.dumps(data)) == data
    assert cfg_of().cache.dir == str(cache_dir)
    assert "${expcache.cache_dir:}" in OmegaConf.to_yaml(cfg_of())  # saved unresolved


def test_default_output_folders_do_not_collide_within_a_second() -> None:
    """Hydra's default folder names have one-second resolution (hydra#1607)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    assert isinstance(raw, dict)
    assert raw["hydra"]["run"]["dir"].endswith("${now:%H-%M-%S.%f}")
    assert raw["hydra"]["sweep"]["dir"].endswith("${now:%H-%M-%S.%f}")


# -- validation: typo, wrong type, out of range ------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["cache.timout=1"], ["timout", "DiskCacheConf"]),
        (["cache=memcached", "cache.server=[a:1]"], ["server", "MemcachedCacheConf"]),
        (
            ["policy=stochastic", "policy.min_repetitions=abc"],
            ["policy.min_repetitions", "Integer"],
        ),
        (["cache=memcached", "cache.timeout=soon"], ["cache.timeout", "Float"]),
        (["cache=memcahced"], ["memcahced", "memcached"]),
    ],
)
def test_typos_and_wrong_types_are_rejected_while_composing(
    cfg_of: Compose, overrides: list[str], fragments: list[str]
) -> None:
    with pytest.raises((ConfigCompositionException, HydraException)) as info:
        cfg_of(*overrides)
    message = f"{info.value}\n{info.value.__cause__}"
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        # keys smuggled past the schema with "+" are caught by the re-typing
        (["+cache.timout=1"], ["cache.timout", "unknown key", "accepted keys", "timeout"]),
        (["+policy.min_reps=2"], ["policy.min_reps", "accepted keys", "time_threshold"]),
        # ranges: the core's validators, reported with the config path
        (["policy=stochastic", "policy.rtol_stderr=-0.5"], ["policy.rtol_stderr=-0.5", ">= 0"]),
        (["policy=stochastic", "policy.atol_stderr=-1"], ["policy.atol_stderr", ">= 0"]),
        (["policy=stochastic", "policy.min_repetitions=0"], ["policy.min_repetitions=0", ">= 1"]),
        (
            ["policy=stochastic", "policy.max_repetitions=2"],
            ["policy.max_repetitions=2", "min_repetitions"],
        ),
        (["policy.time_threshold=-1"], ["policy.time_threshold=-1", "'auto'"]),
        (["policy.time_threshold=fast"], ["policy.time_threshold='fast'", "'auto'"]),
        (["policy.lease_ttl=0"], ["policy.lease_ttl", "> 0"]),
        (
            ["cache=memcached", "cache.servers=[127.0.0.1:23211,localhost]"],
            ["cache.servers[1]='localhost'", "host:port"],
        ),
        (["cache=memcached", "cache.servers=[127.0.0.1:99999]"], ["cache.servers[0]", "1..65535"]),
        (["cache=memcached", "cache.servers=[]"], ["cache.servers", "at least one"]),
        (["cache=memcached", "cache.timeout=0"], ["cache.timeout=0.0", "> 0"]),
        (["cache=memcached", "cache.connect_timeout=-1"], ["cache.connect_timeout", "> 0"]),
        (["cache=memcached", "cache.item_size=10"], ["cache.item_size=10", "at least"]),
        (["cache=memcached", "cache.breaker_threshold=0"], ["cache.breaker_threshold=0", ">= 1"]),
        (["cache=disk", "cache.size_limit=0"], ["cache.size_limit=0", "positive"]),
        (["cache.namespace='has space'"], ["cache.namespace='has space'", "[A-Za-z0-9_.-]"]),
        (["cache.signing_key=short"], ["cache.signing_key", "16 bytes"]),
        (["seed=-1"], ["seed=-1", "integer >= 0"]),
        (["seed=abc"], ["seed='abc'", "integer >= 0"]),
        (["~cache"], ["cache: missing", "cache=disk"]),
    ],
)
def test_out_of_range_values_name_the_key_and_what_is_accepted(
    cfg_of: Compose, overrides: list[str], fragments: list[str]
) -> None:
    cfg = cfg_of(*overrides)
    with pytest.raises(ConfigError) as info:
        plan(cfg)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_signing_key_never_appears_in_error_messages(cfg_of: Compose) -> None:
    with pytest.raises(ConfigError) as info:
        plan(cfg_of("cache.signing_key=tooshort-secret"))
    assert "tooshort-secret" not in str(info.value)


def test_a_bad_value_stops_the_run_before_any_work(
    cfg_of: Compose, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "job"
    cfg = cfg_of("policy=stochastic", "policy.min_repetitions=0")
    with pytest.raises(ConfigError, match=r"policy\.min_repetitions"):
        run(cfg, output_dir=out)
    assert not cache_dir.exists()  # no backend was opened
    assert not (out / "results.json").exists()  # the task never ran
    record = json.loads((out / STATS_FILE).read_text())
    assert record["status"] == "failed"
    assert "policy.min_repetitions=0" in record["error"]
    assert record["total"]["calls"] == 0


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
    ctx = build_context(cfg)
    memo = ctx.wrap(_f)
    assert memo.backend is ctx.backend
    assert memo.cache_key(1).startswith("ns1:")
    assert memo(1, job=1) == 10
    assert memo(1, job=2) == 10  # `job` is not part of the key: a hit
    assert (memo.stats.misses, memo.stats.hits) == (1, 1)
    other = ctx.wrap(_f, name="custom", time_threshold=0.5, signature=b"sig")
    assert (other.time_threshold, other.signature, other.__name__) == (0.5, b"sig", "custom")
    assert other.backend is ctx.backend  # one backend per run


def test_policy_option_that_does_not_fit_the_wrapped_function_names_the_policy(
    cfg_of: Compose, tmp_path: Path
) -> None:
    cfg = cfg_of("cache=memory", "policy.ignore_args=[not_a_parameter]")
    with pytest.raises(ConfigError, match=r"^policy\.ignore_args .*not_a_parameter.*'utility'"):
        run(cfg, output_dir=tmp_path)


def test_context_uses_the_stochastic_policy(cfg_of: Compose) -> None:
    ctx = build_context(
        cfg_of(
            "cache=memory",
            "policy=stochastic",
            "policy.min_repetitions=2",
            "policy.max_repetitions=4",
        )
    )
    memo = ctx.wrap(_f)
    assert memo.repeat == RepetitionPolicy(min_repetitions=2, max_repetitions=4)
    assert [memo(3) for _ in range(3)] == [30.0, 30.0, 30.0]
    assert (memo.stats.misses, memo.stats.repeats, memo.stats.hits) == (1, 1, 1)


def test_summary_counts_per_name_and_in_total_and_merges_worker_stats(cfg_of: Compose) -> None:
    ctx = build_context(cfg_of("cache=memory", "policy.time_threshold=0"))
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
    ctx = build_context(cfg)
    assert ctx.wrap(_f).serde.signing_key == SIGNING_KEY.encode()
    run(cfg, output_dir=tmp_path / "job")
    text = (tmp_path / "job" / STATS_FILE).read_text()
    assert json.loads(text)["signed"] is True
    assert SIGNING_KEY not in text
    assert SIGNING_KEY not in (tmp_path / "job" / "results.json").read_text()


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
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = cfg_of("cache=disk", f"cache.dir={blocker / 'cache'}")
    with caplog.at_level(logging.WARNING, logger="expcache"):
        ctx = build_context(cfg)
    assert isinstance(ctx.backend, NullBackend)
    assert ctx.backend_info["configured"]["directory"] == str(blocker / "cache")
    assert len(caplog.records) == 1
    with pytest.raises(BackendUnavailable, match=r"cache\.strict=false"):
        build_context(cfg_of("cache=disk", f"cache.dir={blocker / 'cache'}", "cache.strict=true"))


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
        ctx = build_context(cfg)
    assert isinstance(ctx.backend, MemcachedBackend)
    assert ctx.backend_info["unreachable_at_start"] == [dead.address]
    assert [r.getMessage() for r in caplog.records if dead.address in r.getMessage()]


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
        stats = json.loads((tmp_path / name / STATS_FILE).read_text())
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


def test_demo_task_validates_its_parameters(cfg_of: Compose, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"task\.subset_size=500: must be in 1\.\.n_points"):
        run(cfg_of("cache=memory", "task.subset_size=500"), output_dir=tmp_path)


def test_a_task_returning_non_json_data_fails_clearly(tmp_path: Path) -> None:
    assert to_jsonable({"a": (1, 2), "b": [1.5]}) == {"a": [1, 2], "b": [1.5]}
    with pytest.raises(TypeError, match=r"results\.b\[0\]: a object is not JSON"):
        to_jsonable({"b": [object()]})


def test_run_outside_hydra_needs_an_output_dir(cfg_of: Compose) -> None:
    with pytest.raises(ConfigError, match="output_dir"):
        run(cfg_of("cache=memory"))


# -- records: callback and sweep summary -------------------------------------------------------
def _job_record(status: str, num: int, hits: int, misses: int) -> dict[str, Any]:
    total = CacheStats(hits=hits, misses=misses).as_dict()
    return {
        "status": status,
        "error": None if status == "completed" else "ConfigError: x",
        "seed": num,
        "job": {"num": num},
        "backend": {"backend": "memory"},
        "functions": {"utility": total},
        "total": total,
    }


def test_sweep_summary_aggregates_job_files(tmp_path: Path) -> None:
    for num, (status, hits, misses) in enumerate(
        [("completed", 0, 4), ("failed", 0, 0), ("completed", 3, 1)]
    ):
        write_json(tmp_path / str(num) / STATS_FILE, _job_record(status, num, hits, misses))
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / STATS_FILE).write_text("{not json")
    summary = summarize_sweep(tmp_path)
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == summary
    assert [j["dir"] for j in summary["jobs"]] == ["0", "1", "2", "10"]
    assert (summary["n_jobs"], summary["n_completed"], summary["n_failed"]) == (4, 2, 2)
    assert summary["total"]["hits"] == 3
    assert summary["total"]["misses"] == 5
    assert summary["functions"]["utility"]["calls"] == 8
    assert summary["jobs"][3]["status"] == "unreadable"


class _FakeReturn:
    def __init__(self, status: Any, exc: BaseException | None = None) -> None:
        self.status = status
        self._return_value = exc
        self.overrides = ["seed=3"]

    @property
    def return_value(self) -> Any:  # like JobReturn: reading it re-raises a failure
        raise AssertionError("the callback must not re-raise the job's exception")


def _hydra_node(tmp_path: Path, mode: Any) -> DictConfig:
    return OmegaConf.create(
        {
            "seed": 3,
            "hydra": {
                "mode": mode,
                "runtime": {"output_dir": str(tmp_path / "sweep" / "0")},
                "sweep": {"dir": str(tmp_path / "sweep")},
                "job": {"num": 0},
            },
        }
    )


def test_callback_writes_a_failed_record_when_the_job_left_none(tmp_path: Path) -> None:
    from hydra.core.utils import JobStatus
    from hydra.types import RunMode

    config = _hydra_node(tmp_path, RunMode.MULTIRUN)
    callback = CacheStatsCallback()
    callback.on_job_end(config, _FakeReturn(JobStatus.FAILED, RuntimeError("boom")))  # type: ignore[arg-type]
    record = json.loads((tmp_path / "sweep" / "0" / STATS_FILE).read_text())
    assert (record["status"], record["error"], record["seed"]) == (
        "failed",
        "RuntimeError: boom",
        3,
    )
    summary = json.loads((tmp_path / "sweep" / SUMMARY_FILE).read_text())
    assert summary["n_failed"] == 1  # written by the job itself: on_multirun_end may never come

    # an existing record (written by run()) is left alone
    write_json(tmp_path / "sweep" / "0" / STATS_FILE, _job_record("completed", 0, 2, 2))
    callback.on_job_end(config, _FakeReturn(JobStatus.COMPLETED))  # type: ignore[arg-type]
    assert json.loads((tmp_path / "sweep" / "0" / STATS_FILE).read_text())["total"]["hits"] == 2
    callback.on_multirun_end(config)
    assert json.loads((tmp_path / "sweep" / SUMMARY_FILE).read_text())["n_completed"] == 1


def test_context_is_a_plain_class_with_the_agreed_interface() -> None:
    ctx = CacheContext(NullBackend(), Memoized)
    memo = ctx.wrap(_f)
    assert memo(2) == 20
    assert ctx.summary()["functions"]["_f"]["misses"] == 1
