"""One contract for every byte store: the memoizer relies on exactly these semantics."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.hash import HashClient

from expcache.backends import Backend, CircuitBreaker, MemcachedBackend, NullBackend
from expcache.errors import BackendTimeout, BackendUnavailable, ConfigError, ValueTooLarge

from .backend_fixtures import ALL_BACKENDS, FakeClock, make_backend
from .conftest import MemcachedServer


@pytest.fixture(params=[*ALL_BACKENDS, "memcached-cluster"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memcached-cluster":
        cluster = request.getfixturevalue("memcached_cluster")
        return MemcachedBackend([s.address for s in cluster], timeout=2.0)
    address = None
    if request.param == "memcached":
        address = request.getfixturevalue("memcached").address
    return make_backend(request.param, tmp_path, address)


def test_get_set_delete(backend: Backend) -> None:
    assert backend.get("k1") is None
    backend.set("k1", b"v1")
    assert backend.get("k1") == b"v1"
    backend.set("k1", b"")
    assert backend.get("k1") == b""  # empty is a value, not a miss
    backend.delete("k1")
    assert backend.get("k1") is None
    backend.delete("k1")  # deleting a missing key is not an error


def test_get_many_set_many(backend: Backend) -> None:
    backend.set_many({"a": b"1", "b": b"2"})
    assert backend.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
    assert backend.get_many([]) == {}


def test_add_only_when_absent(backend: Backend) -> None:
    assert backend.add("lease", b"one") is True
    assert backend.add("lease", b"two") is False
    assert backend.get("lease") == b"one"


def test_gets_cas(backend: Backend) -> None:
    assert backend.gets("m") == (None, None)
    backend.set("m", b"v0")
    value, token = backend.gets("m")
    assert value == b"v0"
    assert backend.cas("m", b"v1", token) is True
    assert backend.get("m") == b"v1"
    assert backend.cas("m", b"v2", token) is False  # changed since our gets
    assert backend.get("m") == b"v1"
    _, token = backend.gets("m")
    backend.delete("m")
    assert backend.cas("m", b"v3", token) is None  # gone since our gets


def test_touch(backend: Backend) -> None:
    assert backend.touch("absent", 5) is False
    backend.set("t", b"x")
    assert backend.touch("t", 30) is True
    assert backend.get("t") == b"x"


def test_clear(backend: Backend) -> None:
    backend.set("x", b"1")
    backend.clear()
    assert backend.get("x") is None


def test_large_value_roundtrip(backend: Backend) -> None:
    value = bytes(range(256)) * (5 * 4096)  # 5 MiB: over memcached's 1 MiB item size
    backend.set("big", value)
    assert backend.get("big") == value
    assert backend.get_many(["big"]) == {"big": value}


def test_pickled_backend_reconnects(backend: Backend) -> None:
    backend.set("p", b"shared")
    clone = pickle.loads(pickle.dumps(backend))
    expected = None if backend.name == "memory" else b"shared"  # memory is process-local
    assert clone.get("p") == expected
    assert clone.breaker is not backend.breaker


def test_value_over_maximum_is_refused(backend: Backend) -> None:
    backend.max_value_size = 1000
    with pytest.raises(ValueTooLarge):
        backend.set("huge", b"x" * 1001)
    assert backend.get("huge") is None


def test_null_backend_stores_nothing() -> None:
    b = NullBackend()
    b.set("k", b"v")
    assert b.get("k") is None
    assert b.add("k", b"v") is True
    assert b.gets("k") == (None, None)


def test_incr_is_a_counter(backend: Backend) -> None:
    assert backend.incr("n") == 1
    assert backend.incr("n", 5) == 6
    assert backend.incr("fresh", 3) == 3


# -- circuit breaker -----------------------------------------------------------------------------
def test_breaker_opens_after_threshold_and_probes_once_per_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow()
    breaker.success()  # consecutive failures only
    assert breaker.failures == 0
    for _ in range(3):
        breaker.failure()
    assert breaker.is_open and not breaker.allow()
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one per cool-down
    breaker.failure()  # the probe failed: open for another cool-down
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open and breaker.allow() and breaker.allow()
    assert (breaker.trips, breaker.probes) == (1, 2)


def test_breaker_lets_exactly_one_probe_through_under_threads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.advance(5)
    start = threading.Barrier(16)

    def contender(_: int) -> bool:
        start.wait()
        return breaker.allow()

    with ThreadPoolExecutor(16) as pool:
        allowed = list(pool.map(contender, range(16)))
    assert allowed.count(True) == 1


def test_breaker_probe_that_never_reports_does_not_wedge_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.advance(5)
    assert breaker.allow()  # this probe's thread dies without calling success/failure
    clock.advance(5)
    assert breaker.allow()  # another probe after another cool-down


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"threshold": 0}, "breaker_threshold"), ({"cooldown": -1}, "breaker_cooldown")],
)
def test_breaker_validation(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# -- memcached specifics -------------------------------------------------------------------------
def test_memcached_connects_lazily_and_per_thread(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address])
    assert backend.connections == 0
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.connections == 0
    backend.set("a", b"1")
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append((backend.client, backend.get("a"))))
    thread.start()
    thread.join()
    assert seen[0][1] == b"1"
    assert seen[0][0] is not backend.client and backend.connections == 2


def test_connections_of_finished_threads_are_dropped(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address])
    backend.set("a", b"1")
    for _ in range(20):
        thread = threading.Thread(target=backend.get, args=("a",))
        thread.start()
        thread.join()
    gc.collect()
    assert backend.connections == 1  # only this thread's: no socket per finished thread


def test_forked_child_does_not_reuse_the_parents_socket(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address])
    backend.set("f", b"parent")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        queue.put((backend.connections, backend.get("f")))

    proc = ctx.Process(target=child)
    proc.start()
    connections, value = queue.get(timeout=30)
    proc.join(30)
    assert (connections, value) == (0, b"parent")
    assert backend.get("f") == b"parent"


def test_cluster_uses_hashclient_without_silent_retries(
    memcached_cluster: list[MemcachedServer],
) -> None:
    backend = MemcachedBackend([s.address for s in memcached_cluster], dead_timeout=7)
    client = backend.client
    assert isinstance(client, HashClient)
    assert client.retry_attempts == 0 and client.dead_timeout == 7 and not client.ignore_exc


def test_errors_are_mapped(memcached_factory: Any) -> None:
    server = memcached_factory()
    backend = MemcachedBackend([server.address], timeout=0.2, connect_timeout=0.2)
    backend.set("k", b"v")
    server.pause()
    try:
        with pytest.raises(BackendTimeout):
            backend.get("k")
    finally:
        server.resume()
    assert backend.get("k") == b"v"
    server.kill()
    with pytest.raises(BackendUnavailable):  # reset or closed by the dead peer
        backend.get("k")
    with pytest.raises(BackendUnavailable):  # refused
        backend.get("k")


def test_tls_context_reaches_pymemcache(memcached_cluster: list[MemcachedServer]) -> None:
    context = ssl.create_default_context()
    single = MemcachedBackend([memcached_cluster[0].address], tls_context=context)
    # wrapped so that TLS sockets stay bounded by the operation's deadline
    assert single.client.tls_context.context is context and single.describe()["tls"] is True
    cluster = MemcachedBackend([s.address for s in memcached_cluster], tls_context=context)
    hash_client = cluster.client
    assert isinstance(hash_client, HashClient)
    assert all(c.tls_context.context is context for c in hash_client.clients.values())
    with pytest.raises(TypeError, match="tls_ca_file"):
        pickle.dumps(single)


def test_tls_settings_build_a_context_that_travels(tmp_path: Path) -> None:
    ca_file = ssl.get_default_verify_paths().cafile or certifi_bundle()
    backend = MemcachedBackend("127.0.0.1:1", tls=True, tls_ca_file=ca_file)
    assert isinstance(backend.client.tls_context.context, ssl.SSLContext)
    assert backend.client.tls_context.verify_mode == ssl.CERT_REQUIRED
    clone = pickle.loads(pickle.dumps(backend))
    assert isinstance(clone.client.tls_context.context, ssl.SSLContext)
    assert clone.tls_ca_file == ca_file
    with pytest.raises(ConfigError, match="tls_ca_file"):
        MemcachedBackend("127.0.0.1:1", tls_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="tls_cert_file"):
        MemcachedBackend("127.0.0.1:1", tls=True, tls_cert_file=str(tmp_path / "missing.pem"))


def certifi_bundle() -> str:
    certifi = pytest.importorskip("certifi")
    return str(certifi.where())


@pytest.mark.parametrize(
    ("servers", "message"),
    [("localhost", "host:port"), ("h:0", "port"), ([], "at least one"), (("h", "x"), "port")],
)
def test_memcached_server_validation(servers: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MemcachedBackend(servers)


def test_garbage_chunk_manifest_is_a_miss(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address])
    backend.set("m", b"XCCHUNK1" + b"\x00\x00\x00\x02" + bytes(8) + bytes(16) + b"zz  \n\r\x00!")
    assert backend.get("m") is None
    assert backend.breaker.failures == 0
