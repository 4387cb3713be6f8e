"""Issue 13: code written for pyDVL 0.7's ``memcached`` runs unchanged against expcache.

Against a real memcached; the MapReduceJob-style job runs in real joblib (loky) workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymemcache.client.base import Client
from pymemcache.serde import PickleSerde

from expcache import (
    KeyEncodingError,
    MemcachedBackend,
    MemcachedClientConfig,
    Memoized,
    MemoryBackend,
    memoize,
)
from expcache import memcached as seed_memcached

from . import helpers_seed_user as user
from .conftest import MemcachedServer


def server_of(srv: MemcachedServer) -> tuple[str, int]:
    return ("127.0.0.1", srv.port)


# -- ignore_args ---------------------------------------------------------------------------------
def test_ignore_args_the_function_never_receives_are_accepted(memcached: MemcachedServer) -> None:
    ran: list[int] = []

    def plain(x: int) -> int:
        ran.append(x)
        return x

    deco = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0,
                     ignore_args=["job_id", "run_id"])
    wrapped = deco(plain)  # pyDVL passes these names to every function; no ConfigError
    assert wrapped(1) == 1 and wrapped(1) == 1 and ran == [1]


def test_ignore_args_are_filtered_out_of_kwargs(memcached: MemcachedServer) -> None:
    ran: list[tuple[Any, ...]] = []

    def varargs(*args: Any, **kwargs: Any) -> int:
        ran.append((args, tuple(sorted(kwargs))))
        return sum(args)

    wrapped = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0,
                        ignore_args=["job_id", "run_id"])(varargs)
    assert wrapped(1, 2, job_id=0, run_id=7) == 3
    assert wrapped(1, 2, job_id=5, run_id=8) == 3  # another job, same work: a hit
    assert wrapped(1, 2, job_id=5, other=1) == 3  # another keyword that counts: a miss
    assert len(ran) == 2 and wrapped.stats.hits == 1
    assert ran[0] == ((1, 2), ("job_id", "run_id"))  # the function still receives them


# -- client_config ---------------------------------------------------------------------------------
@dataclasses.dataclass
class OtherFields:
    server: tuple[str, int]
    timeout: float = 2.5


class AttributeConfig:
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.connect_timeout = 3.0


def test_any_client_config_object_is_accepted(memcached: MemcachedServer) -> None:
    addr = server_of(memcached)
    configs = [
        user.UserClientConfig(server=addr),  # a foreign frozen dataclass
        OtherFields(addr),  # a dataclass with some of the fields
        AttributeConfig(addr),  # any object with the attributes
        {"server": list(addr)},  # a mapping (asdict of a nested config)
        MemcachedClientConfig(server=addr),
    ]
    for cfg in configs:
        wrapped = seed_memcached(client_config=cfg, time_threshold=0)(lambda x: x * 2)
        assert wrapped(21) == 42
        assert isinstance(wrapped.backend, MemcachedBackend)
        assert wrapped.backend.servers == [addr]
        assert wrapped.config.server == addr
    assert seed_memcached(client_config=OtherFields(addr))(abs).config.timeout == 2.5
    assert seed_memcached(client_config=AttributeConfig(addr))(abs).config.connect_timeout == 3.0


def test_default_pydvl_style_options_through_asdict(memcached: MemcachedServer) -> None:
    options = user.UserCacheOptions(
        client_config=user.UserClientConfig(server=server_of(memcached), timeout=5.0),
        time_threshold=0,
    )
    wrapped = seed_memcached(**asdict(options))(abs, signature=b"abs")
    assert wrapped(-3) == 3 and wrapped(-3) == 3 and wrapped.stats.hits == 1


def test_client_config_is_frozen_and_hashable() -> None:
    a = MemcachedClientConfig(server=("h", 1))
    b = MemcachedClientConfig(server=("h", 1))
    assert hash(a) == hash(b) and a == b and {a: 1}[b] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.timeout = 3.0  # type: ignore[misc]


def test_wrapper_client_is_a_lazily_connected_pymemcache_client(
    memcached: MemcachedServer,
) -> None:
    wrapped = seed_memcached(client_config={"server": server_of(memcached)})(abs)
    client = wrapped.client
    assert isinstance(client, Client)
    assert client.server == server_of(memcached)
    client.set("seed-direct", b"1", noreply=False)  # usable as the original's .client
    assert client.get("seed-direct") == b"1"


class JsonSerde:
    """A user's pymemcache serde: counts its calls."""

    def __init__(self) -> None:
        self.calls = {"serialize": 0, "deserialize": 0}

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        self.calls["serialize"] += 1
        return json.dumps(value).encode(), 7

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        self.calls["deserialize"] += 1
        assert flags == 7
        return json.loads(value)


def test_a_custom_serde_is_the_payload_codec(memcached: MemcachedServer) -> None:
    serde = JsonSerde()
    cfg = {"server": server_of(memcached), "serde": serde}
    wrapped = seed_memcached(client_config=cfg, time_threshold=0)(lambda x: {"x": [x, x]})
    assert wrapped(2) == {"x": [2, 2]}
    assert wrapped(2) == {"x": [2, 2]} and wrapped.stats.hits == 1
    assert serde.calls == {"serialize": 1, "deserialize": 1}  # honoured, never ignored
    raw = Client(server_of(memcached)).get(wrapped.cache_key(2))
    assert raw is not None and b'{"x": [2, 2]}' in raw  # inside the verified envelope
    assert raw[:2] == b"XC"


def test_pymemcache_pickle_serde_means_the_default(memcached: MemcachedServer) -> None:
    cfg = {"server": server_of(memcached), "serde": PickleSerde(pickle_version=4)}
    wrapped = seed_memcached(client_config=cfg, time_threshold=0)(lambda x: np.arange(x))
    np.testing.assert_array_equal(wrapped(3), [0, 1, 2])
    np.testing.assert_array_equal(wrapped(3), [0, 1, 2])


def test_a_serde_without_the_protocol_is_rejected_at_decoration() -> None:
    from expcache import ConfigError

    with pytest.raises(ConfigError, match=r"client_config\.serde"):
        seed_memcached(client_config={"serde": object()})


# -- arguments the original keyed through pickle ---------------------------------------------------
class Plain:
    def __init__(self, n: int) -> None:
        self.n = n


def test_seed_decorator_keys_unencodable_arguments_by_pickle_with_one_warning(
    memcached: MemcachedServer,
) -> None:
    ran: list[int] = []

    def f(obj: Plain, seed: np.random.SeedSequence, rng: np.random.Generator) -> int:
        ran.append(obj.n)
        return obj.n

    wrapped = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0)(f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            seed = np.random.SeedSequence(5)
            assert wrapped(Plain(1), seed, np.random.default_rng(seed)) == 1
    assert ran == [1]  # equal pickles, equal keys
    pickled = [w for w in caught if "keyed by its pickle" in str(w.message)]
    assert len(pickled) == 1 and "'obj'" in str(pickled[0].message)  # once, naming it


def test_memoize_without_pickle_args_names_the_real_option() -> None:
    m = Memoized(lambda obj: obj.n, MemoryBackend())
    with pytest.raises(KeyEncodingError, match=r"pickle_args=True") as info:
        m(Plain(1))
    assert "pickle_fallback" not in str(info.value)
    assert Memoized(lambda obj: obj.n, MemoryBackend(), pickle_args=True)(Plain(4)) == 4


def test_closures_and_globals_follow_one_rule() -> None:
    rng = np.random.default_rng(0)

    def with_closure(x: int) -> float:
        return float(rng.integers(0, 10) * 0 + x)

    m = Memoized(with_closure, MemoryBackend())
    assert m(1) == 1.0  # a Generator closure is keyed by its state, like a global one


# -- methods ---------------------------------------------------------------------------------------
class Model:
    calls = 0

    def __init__(self, c: float) -> None:
        self.c = c

    def __cache_key__(self) -> Any:
        return ("Model", self.c)

    @memoize(backend=MemoryBackend(), time_threshold=0)
    def score(self, x: int) -> float:
        type(self).calls += 1
        return self.c * x


class NoKey:
    def __init__(self) -> None:
        self.lock = __import__("threading").Lock()

    @memoize(backend=MemoryBackend())
    def work(self, x: int) -> int:
        return x


def test_memoize_works_as_a_method_decorator() -> None:
    a, b = Model(2.0), Model(3.0)
    assert a.score(5) == 10.0 and a.score(5) == 10.0 and Model(2.0).score(5) == 10.0
    assert b.score(5) == 15.0  # another instance content, another key
    assert Model.calls == 2
    assert a.score.check_call_in_cache(5) and not a.score.check_call_in_cache(6)
    assert a.score.cache_key(5) == Model(2.0).score.cache_key(5) != b.score.cache_key(5)
    assert Model.score.stats.hits == 2  # the class attribute is the memoized function


def test_a_method_of_an_unencodable_instance_names_self() -> None:
    with pytest.raises(KeyEncodingError, match=r"self.*__cache_key__"):
        NoKey().work(1)


# -- the MapReduceJob-style job ---------------------------------------------------------------------
@pytest.mark.slow
def test_parallel_job_shares_entries_across_workers(
    memcached: MemcachedServer, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    log = str(runs)
    first = user.map_reduce(memcached.port, n_jobs=2, run_id=1, run_log=log)
    assert len(runs.read_text().splitlines()) == 6
    again = user.map_reduce(memcached.port, n_jobs=2, run_id=2, run_log=log)  # other ids
    assert again == first
    assert len(runs.read_text().splitlines()) == 6  # every evaluation reused
    pids = {line.split()[0] for line in runs.read_text().splitlines()}
    assert str(os.getpid()) not in pids  # they ran in the workers
    other_seed = user.map_reduce(memcached.port, n_jobs=2, run_id=3, run_log=log, seed=7)
    assert other_seed != first and len(runs.read_text().splitlines()) == 12


def test_sub_loggers_stay_quiet_on_success(
    memcached: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="expcache"):
        wrapped = seed_memcached(client_config={"server": server_of(memcached)}, time_threshold=0,
                            ignore_args=["job_id"])(lambda x: x)
        wrapped(1)
    assert caplog.records == []
