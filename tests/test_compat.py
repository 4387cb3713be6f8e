"""The seed-compatible ``memcached()`` decorator against a real server, used as users do."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pymemcache
import pytest
from pymemcache.serde import PickleSerde

from expcache import CacheStats, ConfigError, MemcachedBackend, MemcachedClientConfig
from expcache import memcached as seed_memcached

from . import helpers_workers
from .conftest import DEFAULT_PORT, MemcachedServer


def server_of(srv: MemcachedServer) -> tuple[str, int]:
    return ("127.0.0.1", srv.port)


@dataclass
class SeedCacheOptions:
    """The shape pyDVL 0.7 users keep their cache options in (``memcached(**asdict(o))``)."""

    client_config: MemcachedClientConfig = field(default_factory=MemcachedClientConfig)
    time_threshold: float = 0.3
    allow_repeated_evaluations: bool = False
    rtol_stderr: float = 0.1
    min_repetitions: int = 3
    ignore_args: Iterable[str] | None = None


def test_client_config_defaults_match_the_seed() -> None:
    cfg = MemcachedClientConfig()
    assert cfg.server == ("localhost", DEFAULT_PORT)
    assert (cfg.connect_timeout, cfg.timeout, cfg.no_delay) == (1.0, 0.1, True)
    assert isinstance(cfg.serde, PickleSerde)


def test_asdict_of_client_config_builds_a_real_pymemcache_client(
    memcached: MemcachedServer,
) -> None:
    cfg = MemcachedClientConfig(server=server_of(memcached), timeout=2.0)
    client = pymemcache.Client(**asdict(cfg))
    try:
        client.set("seed-user-key", {"a": [1, 2]}, noreply=False)
        assert client.get("seed-user-key") == {"a": [1, 2]}  # the serde pickles both ways
    finally:
        client.close()


def test_decorator_miss_hit_name_doc_config(memcached: MemcachedServer) -> None:
    def utility(x: int) -> float:
        """Score of subset x."""
        ran.append(x)
        return x / 2

    ran: list[int] = []
    cfg = MemcachedClientConfig(server=server_of(memcached), timeout=2.0)
    wrapped = seed_memcached(client_config=cfg, time_threshold=0)(utility)
    assert wrapped.__name__ == "memcached_utility"
    assert "utility" in (wrapped.__doc__ or "") and "Score of subset x." in (wrapped.__doc__ or "")
    assert wrapped.config == cfg
    assert wrapped(3) == 1.5 and wrapped(3) == 1.5
    assert ran == [3]
    s = wrapped.stats
    assert isinstance(s, CacheStats)
    assert (s.sets, s.misses, s.hits, s.timeouts, s.errors, s.reconnects) == (1, 1, 1, 0, 0, 0)


def test_default_time_threshold_skips_fast_functions(memcached: MemcachedServer) -> None:
    wrapped = seed_memcached(client_config={"server": server_of(memcached)})(lambda x: x)
    wrapped(1)
    wrapped(1)
    assert (wrapped.stats.sets, wrapped.stats.below_threshold, wrapped.stats.misses) == (0, 2, 2)


def test_options_dataclass_through_asdict(memcached: MemcachedServer) -> None:
    options = SeedCacheOptions(
        client_config=MemcachedClientConfig(server=server_of(memcached), timeout=2.0),
        time_threshold=0,
        ignore_args=["job_id"],
    )
    kwargs = asdict(options)
    assert isinstance(kwargs["client_config"], dict)  # what users' code actually passes
    wrapped = seed_memcached(**kwargs)(lambda x, job_id=0: x + 1)
    assert wrapped.config == options.client_config
    assert wrapped.config.timeout == 2.0 and wrapped.config.connect_timeout == 1.0
    assert wrapped(1, job_id=1) == 2 and wrapped(1, job_id=2) == 2
    assert wrapped.stats.hits == 1
    backend = wrapped.backend
    assert isinstance(backend, MemcachedBackend)
    assert backend.servers == [server_of(memcached)] and backend.timeout == 2.0


def test_client_config_merges_over_defaults_and_lists_become_tuples() -> None:
    wrapped = seed_memcached(client_config={"server": ["127.0.0.1", 1234]})(lambda: 1)
    assert wrapped.config.server == ("127.0.0.1", 1234)
    assert wrapped.config.timeout == 0.1 and wrapped.config.no_delay is True


def test_unknown_client_config_key_names_it() -> None:
    with pytest.raises(ConfigError, match=r"client_config.*'servr'"):
        seed_memcached(client_config={"servr": ("127.0.0.1", 1)})


def test_signature_as_second_argument(memcached: MemcachedServer) -> None:
    deco = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0)
    a = deco(lambda x: "a", b"shared-identity")
    b = deco(lambda x: "b", signature=b"shared-identity")
    assert a(1) == "a" and b(1) == "a"


def test_repeated_evaluations_seed_parameters(memcached: MemcachedServer) -> None:
    values = iter([-10.0, -10.2, -9.8, 99.0])

    def noisy(x: int) -> float:
        return next(values)

    wrapped = seed_memcached(
        client_config={"server": server_of(memcached)},
        allow_repeated_evaluations=True,
        rtol_stderr=0.1,
        min_repetitions=3,
    )(noisy, signature=b"noisy-sequence")
    means = [wrapped(1) for _ in range(5)]
    # exactly three evaluations (the seed did four), then the negative mean is returned
    assert means[2:] == [pytest.approx(-10.0)] * 3
    assert (wrapped.stats.misses, wrapped.stats.repeats, wrapped.stats.hits) == (1, 2, 2)


def test_compat_wrapper_in_a_spawned_child(
    memcached: MemcachedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.log"
    monkeypatch.setenv(helpers_workers.RUNS_ENV, str(runs))
    wrapped = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0)(
        helpers_workers.square
    )
    assert wrapped(7) == 49
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(helpers_workers.call_in_child, (wrapped, [(7,)], str(runs)))
    assert child["pid"] != os.getpid()
    assert child["name"] == "memcached_square"
    assert child["results"] == [49] and child["runs"] == 0 and child["stats"]["hits"] == 1
