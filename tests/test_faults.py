"""The cache never breaks the computation: faults injected for real into memcached processes.

Every test checks the values the caller gets (always right) and the counters that explain
them. Time never passes by sleeping: the circuit breaker's clock is a ``FakeClock``.
"""

from __future__ import annotations

import logging
import pathlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pymemcache
import pytest

from expcache import MemcachedBackend, Memoized, RepetitionPolicy
from expcache.backends.memcached import _MANIFEST
from expcache.entries import Meta, ValueEntry
from expcache.serde import ENV_SIGNING_KEY, FORMAT_VERSION, MAGIC, Serde, _key_digest

from . import helpers_workers
from .backend_fixtures import FakeClock
from .conftest import MemcachedFactory, MemcachedServer

THRESHOLD = 3
COOLDOWN = 3600.0  # never passes by itself: only FakeClock.advance moves it


def fragile_backend(*servers: MemcachedServer | str, timeout: float = 0.5) -> MemcachedBackend:
    addresses = [s if isinstance(s, str) else s.address for s in servers]
    backend = MemcachedBackend(
        addresses,
        timeout=timeout,
        connect_timeout=timeout,
        breaker_threshold=THRESHOLD,
        breaker_cooldown=COOLDOWN,
    )
    backend.breaker.clock = FakeClock()
    return backend


def clock_of(backend: MemcachedBackend) -> FakeClock:
    clock = backend.breaker.clock
    assert isinstance(clock, FakeClock)
    return clock


def raw_client(server: MemcachedServer) -> pymemcache.Client:
    return pymemcache.Client(("127.0.0.1", server.port), timeout=2, default_noreply=False)


def triple(x: int) -> int:
    return 3 * x


# -- server down, killed, restarted --------------------------------------------------------------
def test_server_absent_at_construction_and_first_call(
    memcached_factory: MemcachedFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_factory()
    server.kill()  # nothing listens on its port any more
    backend = fragile_backend(server)
    m = Memoized(helpers_workers.square, backend)
    clone = pickle.loads(pickle.dumps(m))
    assert backend.connections == 0 and clone.backend.connections == 0  # nothing connected
    clone.backend.breaker.clock = FakeClock()  # clocks do not travel; the settings do
    with caplog.at_level(logging.WARNING, logger="expcache"):
        assert [clone(x) for x in range(10)] == [x * x for x in range(10)]
    s = clone.stats
    assert (s.errors, s.timeouts, s.bypassed, s.misses, s.hits) == (THRESHOLD, 0, 7, 10, 0)
    assert len([r for r in caplog.records if "backend failed" in r.message]) == 1

    server.restart()  # the server appears later, on the same address
    clock_of(clone.backend).advance(COOLDOWN)
    assert clone(1) == 1 and clone(1) == 1
    assert (clone.stats.reconnects, clone.stats.hits) == (1, 1)


def test_server_killed_mid_run_then_restarted(
    memcached_factory: MemcachedFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_factory()
    backend = fragile_backend(server)
    killed: list[int] = []

    def work(x: int) -> int:
        if x == 10 and not killed:  # the server dies while this very call computes
            killed.append(x)
            server.kill()
        return 3 * x

    m = Memoized(work, backend, signature=b"work")
    with caplog.at_level(logging.INFO, logger="expcache"):
        assert [m(x) for x in range(30)] == [3 * x for x in range(30)]
        s = m.stats
        assert s.sets == 10  # 0..9 stored; 10 computed but its store failed
        assert s.errors + s.timeouts == THRESHOLD and s.bypassed == 30 - 10 - THRESHOLD
        assert [m(x) for x in range(5)] == [0, 3, 6, 9, 12]  # still open: bypassed
        assert m.stats.bypassed == 30 - 10 - THRESHOLD + 5

        server.restart()  # same port, empty
        clock_of(backend).advance(COOLDOWN)
        assert [m(x) for x in range(30)] == [3 * x for x in range(30)]
        assert m.stats.reconnects == 1 and m.stats.sets == 10 + 30
        before = m.stats.hits
        assert [m(x) for x in range(30)] == [3 * x for x in range(30)]
        assert m.stats.hits - before == 30  # hitting again after the restart
    messages = [r.message for r in caplog.records]
    assert sum("backend failed" in msg for msg in messages) == 1  # once per incident
    assert sum("backend is back" in msg for msg in messages) == 1


# -- hung server (SIGSTOP) -----------------------------------------------------------------------
def test_hung_server_costs_at_most_threshold_timeouts(memcached_factory: MemcachedFactory) -> None:
    server = memcached_factory()
    backend = fragile_backend(server, timeout=0.2)
    m = Memoized(triple, backend)
    for x in range(10):
        m(x)
    server.pause()
    try:
        assert [m(x) for x in range(40)] == [3 * x for x in range(40)]
        s = m.stats
        assert 1 <= s.timeouts <= backend.breaker.threshold + backend.breaker.probes
        assert s.bypassed >= 40 - backend.breaker.threshold
        assert s.hits == 0  # nothing could be read while it hung
    finally:
        server.resume()
    clock_of(backend).advance(COOLDOWN)  # the cool-down has passed: the next call probes
    assert [m(x) for x in range(10)] == [3 * x for x in range(10)]
    assert m.stats.reconnects == 1
    assert m.stats.hits == 10  # entries written before the hang are served again
    assert not backend.breaker.is_open


def test_hang_during_a_miss_costs_one_timeout(memcached_factory: MemcachedFactory) -> None:
    """The server hangs after the lookup and the lease, while the function computes: the
    call's store times out once and the call gives up on the backend (no lease release, no
    'unstored' marker: each of those would cost another full timeout)."""
    server = memcached_factory()
    backend = fragile_backend(server, timeout=0.2)

    def hangs_server(x: int) -> int:
        server.pause()
        return x + 1

    m = Memoized(hangs_server, backend, signature=b"hangs")
    try:
        assert m(1) == 2
        assert (m.stats.timeouts, m.stats.errors, m.stats.sets) == (1, 0, 0)
    finally:
        server.resume()


def test_hang_during_a_repeated_evaluation_costs_one_timeout(
    memcached_factory: MemcachedFactory,
) -> None:
    server = memcached_factory()
    backend = fragile_backend(server, timeout=0.2)

    def hangs_server(x: int) -> float:
        server.pause()
        return 4.0

    policy = RepetitionPolicy(min_repetitions=10)
    m = Memoized(hangs_server, backend, repeat=policy, signature=b"hangs-repeat")
    try:
        assert m(1) == 4.0
        assert m.stats.timeouts == 1
        assert [m(1) for _ in range(10)] == [4.0] * 10  # gets time out, then the breaker opens
        assert m.stats.timeouts <= THRESHOLD and m.stats.bypassed >= 10 - THRESHOLD
    finally:
        server.resume()


# -- large values --------------------------------------------------------------------------------
def big_bytes(n: int) -> bytes:
    return np.random.default_rng(n).bytes(n)  # incompressible, deterministic


def test_five_megabyte_value_round_trips(memcached: MemcachedServer) -> None:
    ran: list[int] = []

    def big(n: int) -> bytes:
        ran.append(n)
        return big_bytes(n)

    m = Memoized(big, MemcachedBackend([memcached.address], timeout=5), time_threshold=0)
    size = 5 * 2**20
    first = m(size)
    second = m(size)
    assert second == first == big_bytes(size)
    assert ran == [size] and m.stats.hits == 1
    assert memcached.stat("curr_items") >= 6  # chunks of at most 1 MiB plus the manifest


def test_value_over_max_value_size_is_counted_not_stored(
    memcached: MemcachedServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5, max_value_size=2**20)
    m = Memoized(big_bytes, backend, time_threshold=0)
    with caplog.at_level(logging.WARNING, logger="expcache"):
        for _ in range(3):
            assert m(2 * 2**20) == big_bytes(2 * 2**20)
    assert (m.stats.too_large, m.stats.sets, m.stats.misses, m.stats.errors) == (3, 0, 3, 0)
    assert m.stats.lease_waits == 0  # the 'unstored' lease marker lets later calls go ahead
    assert len([r for r in caplog.records if "too_large" in r.message]) == 1  # warned once
    assert not backend.breaker.failures


def test_chunked_value_with_an_evicted_chunk_is_a_miss(memcached: MemcachedServer) -> None:
    ran: list[int] = []

    def big(n: int) -> bytes:
        ran.append(n)
        return big_bytes(n)

    m = Memoized(big, MemcachedBackend([memcached.address], timeout=5), time_threshold=0)
    size = 3 * 2**20
    m(size)
    key = m.cache_key(size)
    raw = raw_client(memcached)
    manifest = raw.get(key)
    count, _total, _digest, nonce = _MANIFEST.unpack(manifest[8:])
    assert count == 4
    assert raw.delete(f"{key}:c2:{nonce.decode()}")  # "evict" one chunk
    assert m(size) == big_bytes(size)  # recomputed, never a partial or corrupt value
    assert len(ran) == 2 and m.stats.hits == 0
    assert m(size) == big_bytes(size) and m.stats.hits == 1  # re-stored whole


# -- corrupt and foreign entries -----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key", "bad_version"])
def test_corrupt_entries_are_counted_misses(memcached: MemcachedServer, damage: str) -> None:
    ran: list[int] = []

    def f(x: int) -> dict[str, int]:
        ran.append(x)
        return {"x": x}

    m = Memoized(f, MemcachedBackend([memcached.address], timeout=5))
    m(1)
    m(2)
    raw = raw_client(memcached)
    key = m.cache_key(2)
    good = raw.get(key)
    bad = {
        "garbage": b"\x00\xffnot an envelope at all",
        "truncated": good[: len(good) - 5],
        "other_key": raw.get(m.cache_key(1)),  # a valid envelope of f(1), copied under f(2)
        "bad_version": good[:2] + bytes([FORMAT_VERSION + 1]) + good[3:],
    }[damage]
    raw.set(key, bad)
    assert m(2) == {"x": 2}
    assert ran == [1, 2, 2] and m.stats.corrupt == 1
    assert m(2) == {"x": 2} and m.stats.hits == 1  # the damaged entry was replaced


# -- signed values -------------------------------------------------------------------------------
class Touch:
    """A hostile payload: unpickling it creates ``path`` (stands for any code execution)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)


SIGNING_KEY = b"0123456789abcdef0123456789abcdef"


def forged(kind: str, key: str, marker: Path) -> bytes:
    payload = pickle.dumps(Touch(marker), protocol=5)
    header = MAGIC + bytes((FORMAT_VERSION, 2)) + _key_digest(key)  # flags: signed
    return {
        "raw_pickle": payload,
        "unsigned_envelope": Serde(None).dumps(key, ValueEntry(Touch(marker), Meta())),
        "bad_mac": header + b"\x00" * 32 + payload,
        "other_signing_key": Serde(b"another key of 32 bytes........").dumps(
            key, ValueEntry(Touch(marker), Meta())
        ),
    }[kind]


def test_unsigned_reader_executes_a_forged_pickle(memcached: MemcachedServer, tmp_path: Path) -> None:
    """The threat itself (why signing exists): without a key, the payload runs on read."""
    m = Memoized(triple, MemcachedBackend([memcached.address], timeout=5))
    marker = tmp_path / "pwned"
    raw_client(memcached).set(m.cache_key(1), forged("unsigned_envelope", m.cache_key(1), marker))
    assert m(1) is None  # a well-formed unsigned entry: the forger chose the value too
    assert marker.exists()
    assert m.stats.hits == 1 and m.stats.corrupt == 0


@pytest.mark.parametrize(
    "kind", ["raw_pickle", "unsigned_envelope", "bad_mac", "other_signing_key"]
)
@pytest.mark.parametrize("source", ["argument", "environment"])
def test_signed_reader_rejects_forgeries_before_unpickling(
    memcached: MemcachedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    source: str,
) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    if source == "environment":
        monkeypatch.setenv(ENV_SIGNING_KEY, SIGNING_KEY.decode())
        m = Memoized(triple, backend)
    else:
        m = Memoized(triple, backend, signing_key=SIGNING_KEY)
    assert m.serde.signed
    marker = tmp_path / "pwned"
    key = m.cache_key(1)
    raw_client(memcached).set(key, forged(kind, key, marker))
    assert m(1) == 3
    assert not marker.exists()
    assert m.stats.corrupt == 1
    assert m(1) == 3 and m.stats.hits == 1  # our own signed entry replaced the forgery


# -- full server ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["evicting", "refusing"])
def test_full_server_keeps_returning_correct_values(
    memcached_factory: MemcachedFactory, mode: str
) -> None:
    server = memcached_factory(memory_mb=2, extra_args=("-M",) if mode == "refusing" else ())
    backend = fragile_backend(server, timeout=2)
    m = Memoized(big_bytes, backend, time_threshold=0)
    sizes = [100_000 + i for i in range(60)]  # ~6 MB into a 2 MB server
    assert all(m(n) == big_bytes(n) for n in sizes)
    full = server.stat("evictions") if mode == "evicting" else m.stats.errors
    assert full > 0
    assert all(m(n) == big_bytes(n) for n in sizes)
    # A full server is alive: no failure incident, no breaker trip, and no call queues
    # behind the lease of a value whose store was refused.
    s = m.stats
    assert (s.bypassed, s.reconnects, s.timeouts, s.lease_waits) == (0, 0, 0, 0)
    if mode == "refusing":
        assert s.hits > 0  # what fitted is still served


# -- cluster -------------------------------------------------------------------------------------
def test_cluster_survives_losing_one_server(memcached_factory: MemcachedFactory) -> None:
    servers = [memcached_factory() for _ in range(3)]
    backend = fragile_backend(*servers, timeout=1)
    m = Memoized(triple, backend)
    keys = range(60)
    assert [m(x) for x in keys] == [3 * x for x in keys]
    home = {x: next(i for i, s in enumerate(servers) if raw_client(s).get(m.cache_key(x)))
            for x in keys}
    assert set(home.values()) == {0, 1, 2}  # spread over all three
    servers[1].kill()
    on_survivors = sum(1 for x in keys if home[x] != 1)

    before = m.stats.copy()
    assert [m(x) for x in keys] == [3 * x for x in keys]  # no call fails
    delta = m.stats - before
    assert delta.hits == on_survivors  # the others keep serving
    assert 1 <= delta.errors + delta.timeouts <= 2  # the dead node leaves the ring at once
    assert delta.bypassed == 0
    assert [m(x) for x in keys] == [3 * x for x in keys]  # stores what the failure skipped
    before = m.stats.copy()
    assert [m(x) for x in keys] == [3 * x for x in keys]
    assert (m.stats - before).hits == len(keys)  # its keys now live on the survivors
