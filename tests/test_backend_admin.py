"""Operating a store: enumeration, delete_many, prefix clears, server statistics, probes, scope.

Against one real memcached, the 3-node cluster fixture, a disk cache and the memory store.
Keys follow the key format (``[ns:]ex3:<tag>:<digest>`` plus auxiliary suffixes), so a
prefix clear of one function must take its chunks and leases with it and nothing else.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from expcache.backends import Backend, DiskBackend, MemcachedBackend, MemoryBackend, NullBackend
from expcache.errors import BackendError

from .backend_fixtures import make_backend
from .conftest import HostileFactory, MemcachedFactory, MemcachedServer

MINE = "ns1:ex3:aaaaaaaaaaaa:"
THEIRS = "ns1:ex3:bbbbbbbbbbbb:"
OTHER_NS = "ns2:ex3:aaaaaaaaaaaa:"
BIG = os.urandom(3 * 2**20 + 5)  # chunked on memcached: 4 chunks under the entry's prefix


def digest(i: int) -> str:
    return f"{i:032x}"


@pytest.fixture(params=["memcached", "memcached-cluster", "disk", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memcached-cluster":
        cluster = request.getfixturevalue("memcached_cluster")
        return MemcachedBackend([s.address for s in cluster], timeout=5.0)
    address = None
    if request.param == "memcached":
        address = request.getfixturevalue("memcached").address
    return make_backend(request.param, tmp_path, address)


def fill(store: Backend) -> dict[str, bytes]:
    entries = {f"{p}{digest(i)}": f"{p}{i}".encode() for p in (MINE, THEIRS, OTHER_NS)
               for i in range(30)}  # fmt: skip
    store.set_many(entries)
    store.set(f"{MINE}{digest(999)}", BIG)
    store.set(f"{MINE}{digest(1)}:lease", b"token")
    entries[f"{MINE}{digest(999)}"] = BIG
    entries[f"{MINE}{digest(1)}:lease"] = b"token"
    return entries


def test_iter_keys_lists_a_prefix_with_its_auxiliary_keys(store: Backend) -> None:
    entries = fill(store)
    mine = set(store.iter_keys(MINE))
    primary = {k for k in entries if k.startswith(MINE)}
    assert primary <= mine
    extra = mine - primary
    if store.name == "memcached":  # the chunks of BIG, named after their entry
        assert len(extra) == 4 and all(k.startswith(f"{MINE}{digest(999)}:c") for k in extra)
    else:
        assert not extra
    everything = set(store.iter_keys())
    assert set(entries) <= everything
    assert set(store.iter_keys("ns2:")) == {k for k in entries if k.startswith("ns2:")}
    assert list(store.iter_keys("nothing-here:")) == []


def test_clear_with_a_prefix_deletes_only_that_prefix(store: Backend) -> None:
    entries = fill(store)
    removed = store.clear(MINE)
    chunks = 4 if store.name == "memcached" else 0
    assert removed == 31 + 1 + chunks  # 30 entries, BIG (and its chunks), one lease
    assert list(store.iter_keys(MINE)) == []
    assert store.get(f"{MINE}{digest(999)}") is None
    for key, value in entries.items():
        if not key.startswith(MINE):
            assert store.get(key) == value
    assert store.clear(MINE) == 0


def test_clear_without_a_prefix_empties_the_store(store: Backend) -> None:
    fill(store)
    assert store.clear() >= 92
    assert list(store.iter_keys()) == []


def test_delete_many_counts_the_keys_that_were_there(store: Backend) -> None:
    store.set_many({"d1": b"1", "d2": b"2", "d3": b"3"})
    assert store.delete_many(["d1", "d3", "absent"]) == 2
    assert store.get_many(["d1", "d2", "d3"]) == {"d2": b"2"}
    assert store.delete_many([]) == 0


@pytest.fixture(params=["memcached", "memcached-cluster", "disk", "memory"])
def fresh_store(
    request: pytest.FixtureRequest, tmp_path: Path, memcached_factory: MemcachedFactory
) -> Backend:
    """Like ``store``, on private servers: memcached's ``curr_items`` still counts flushed
    items until they are reclaimed, so statistics need servers no other test wrote to."""
    if request.param.startswith("memcached"):
        servers = [memcached_factory() for _ in range(3 if "cluster" in request.param else 1)]
        return MemcachedBackend([s.address for s in servers], timeout=5.0)
    return make_backend(request.param, tmp_path, None)


def test_server_stats_report_items_and_bytes(fresh_store: Backend) -> None:
    store = fresh_store
    store.set_many({f"s{i}": b"x" * 100 for i in range(10)})
    stats = store.server_stats()
    assert stats["backend"] == store.name
    assert stats["items"] == 10
    assert stats["bytes"] >= 1000
    if isinstance(store, MemcachedBackend):
        nodes = stats["nodes"]
        assert set(nodes) == {f"{h}:{p}" for h, p in store.servers}
        assert sum(n["curr_items"] for n in nodes.values()) == 10
        assert all(n["limit_maxbytes"] == 64 * 2**20 for n in nodes.values())
        assert all(n["item_size_max"] == 2**20 for n in nodes.values())
        assert all({"get_hits", "get_misses", "evictions"} <= set(n) for n in nodes.values())
        assert stats["limit_maxbytes"] == 64 * 2**20 * len(nodes)
    if isinstance(store, DiskBackend):
        assert stats["directory"] == str(store.directory)


def test_expired_entries_are_not_listed(store: Backend) -> None:
    if isinstance(store, MemcachedBackend):
        for host, port in store.servers:  # an exptime in the past: stored, already expired
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"set gone 0 -1 1\r\nx\r\n")
                assert s.recv(64) == b"STORED\r\n"
    else:
        store.set("gone", b"v", expire=1e-6)  # past its expiry before anything reads it
    store.set("kept", b"v")
    assert store.get("gone") is None
    assert set(store.iter_keys()) == {"kept"}


# -- memcached specifics -------------------------------------------------------------------------
def stat(server: MemcachedServer, name: str) -> int:
    return server.stat(name)


def test_prefix_clear_never_flushes(memcached_cluster: list[MemcachedServer]) -> None:
    backend = MemcachedBackend([s.address for s in memcached_cluster], timeout=5.0)
    fill(backend)
    before = [stat(s, "cmd_flush") for s in memcached_cluster]
    backend.clear(MINE)
    assert [stat(s, "cmd_flush") for s in memcached_cluster] == before
    backend.clear()
    assert [stat(s, "cmd_flush") for s in memcached_cluster] == [n + 1 for n in before]


def test_keys_are_url_decoded(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5.0)
    backend.set("a%20b", b"1")  # memcached's metadump prints this key as a%2520b
    backend.set("p:100%", b"2")
    assert set(backend.iter_keys()) == {"a%20b", "p:100%"}
    assert backend.clear("p:") == 1 and backend.get("a%20b") == b"1"


def test_enumeration_asks_every_node(memcached_factory: MemcachedFactory) -> None:
    cluster = [memcached_factory() for _ in range(3)]
    backend = MemcachedBackend([s.address for s in cluster], timeout=5.0)
    keys = {f"{MINE}{digest(i)}" for i in range(60)}
    backend.set_many(dict.fromkeys(keys, b"v"))
    per_node = [stat(s, "curr_items") for s in cluster]
    assert all(per_node) and sum(per_node) == 60  # spread over all three
    assert set(backend.iter_keys(MINE)) == keys


def test_a_consumer_may_delete_while_iterating(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5.0)
    backend.set_many({f"it{i}": b"v" for i in range(500)})
    for key in backend.iter_keys("it"):
        backend.delete(key)  # the dump has a connection of its own
    assert list(backend.iter_keys("it")) == []


def test_admin_commands_on_a_dead_node_raise(memcached_factory: MemcachedFactory) -> None:
    alive, dead = memcached_factory(), memcached_factory()
    backend = MemcachedBackend([alive.address, dead.address], timeout=2.0, connect_timeout=2)
    backend.set_many({f"k{i}": b"v" for i in range(20)})
    dead.kill()
    with pytest.raises(BackendError, match=dead.address):
        list(backend.iter_keys())
    with pytest.raises(BackendError, match=dead.address):
        backend.clear("k")
    assert list(MemcachedBackend([alive.address]).iter_keys("k")) == []  # the rest was done
    stats = backend.server_stats()
    assert "error" in stats["nodes"][dead.address]
    assert stats["nodes"][alive.address]["curr_items"] == 0


# -- probe ---------------------------------------------------------------------------------------
def test_probe_reports_each_failing_node(memcached_factory: MemcachedFactory) -> None:
    a, b, c = memcached_factory(), memcached_factory(), memcached_factory()
    backend = MemcachedBackend([a.address, b.address, c.address], timeout=2, connect_timeout=2)
    assert backend.probe() == []
    b.kill()
    failures = backend.probe()
    assert [where for where, _ in failures] == [b.address]
    assert "refused" in failures[0][1].lower() or "connection" in failures[0][1].lower()
    assert backend.connections == 0  # probes use connections of their own, closed after


def test_probe_uses_the_backends_tls_settings(
    memcached_cluster: list[MemcachedServer], hostile: HostileFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    plain = [s.address for s in memcached_cluster]
    tls_backend = MemcachedBackend(plain, tls=True, tls_ca_file=str(cert), timeout=2)
    failures = tls_backend.probe()  # a plain server cannot complete a TLS handshake
    assert sorted(w for w, _ in failures) == sorted(plain)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls_servers = [hostile(tls=context, replies=(b"END\r\n",)) for _ in range(2)]
    ok = MemcachedBackend([s.address for s in tls_servers], tls=True, tls_ca_file=str(cert))
    assert ok.probe() == []


def test_probe_never_raises(tmp_path: Path) -> None:
    unusable = Path("/proc/expcache-unusable/cache")  # /proc refuses new directories
    disk = DiskBackend(unusable)
    (where, why), = disk.probe()
    assert where == str(unusable) and why
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free: nothing listens there
    (where, _), = MemcachedBackend(f"127.0.0.1:{port}", connect_timeout=1).probe()
    assert where == f"127.0.0.1:{port}"
    assert MemoryBackend().probe() == [] and NullBackend().probe() == []


# -- scope ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "scope"),
    [
        (MemcachedBackend("127.0.0.1:1"), "network"),
        (DiskBackend("/tmp/never-created-by-this-test"), "host"),
        (MemoryBackend(), "process"),
        (NullBackend(), "process"),
    ],
)
def test_scope_and_shared(backend: Any, scope: str) -> None:
    assert backend.scope == scope
    assert backend.shared is (scope != "process")


def test_a_fresh_entry_is_found_by_the_hash_walk_and_the_lru_walk(
    memcached: MemcachedServer,
) -> None:
    """memcached's LRU walk (``metadump all``) can miss an item that leaves the HOT segment
    during the walk; enumeration walks the hash table instead, and the LRU walk (the fallback
    for old servers) is repeated by clear. Both find what was just written."""
    from expcache.backends import _mcadmin

    backend = MemcachedBackend([memcached.address], timeout=5)
    for i in range(200):
        key = f"fresh:{i}"
        backend.set(key, b"v")
        assert key in set(backend.iter_keys("fresh:"))
        assert backend.clear(key) >= 1 and backend.get(key) is None
    server = backend.servers[0]
    backend.set("fresh:lru", b"v")
    assert list(_mcadmin._node_keys(backend, server, "fresh:", b"all")) == ["fresh:lru"]
