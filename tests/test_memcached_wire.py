"""The direct-socket ``get`` of the single-server backend, against a real memcached.

It shares pymemcache's connection, so these tests interleave the two on one socket and check
every reply shape: miss, empty value, values over several ``recv``, payloads that contain the
protocol's own terminators, refused keys, a dead server (a hung one: test_backends; a
dripping one: test_backend_deadlines), and large values received into one buffer.
"""

from __future__ import annotations

import os

import pytest
from pymemcache.client.base import Client

from expcache.backends import MemcachedBackend
from expcache.backends.memcached import _MANIFEST
from expcache.errors import BackendError, BackendUnavailable

from .conftest import HostileFactory, MemcachedFactory, MemcachedServer


@pytest.fixture
def backend(memcached: MemcachedServer) -> MemcachedBackend:
    return MemcachedBackend([memcached.address], timeout=2.0)


@pytest.mark.parametrize(
    "value",
    [b"", b"x", b"\r\nEND\r\n", b"VALUE k 0 3\r\nabc\r\nEND\r\n" * 100,
     os.urandom(1000), os.urandom(300_000), os.urandom(1_000_000)],
    ids=["empty", "one", "terminator", "protocol-lookalike", "1k", "300k", "1m"],
)
def test_values_round_trip_exactly(backend: MemcachedBackend, value: bytes) -> None:
    backend.set("wire:k", value)
    assert backend.get("wire:k") == value
    assert type(backend.client) is Client  # the direct path was the one used


def test_interleaves_with_pymemcache_on_one_socket(backend: MemcachedBackend) -> None:
    for i in range(100):
        backend.set(f"i{i}", str(i).encode())
        assert backend.get(f"i{i}") == str(i).encode()
        assert backend.get(f"absent{i}") is None
        value, token = backend.gets(f"i{i}")  # pymemcache parses the next reply correctly
        assert value == str(i).encode()
        assert backend.cas(f"i{i}", b"new", token) is True
    assert backend.get_many(["i0", "i99"]) == {"i0": b"new", "i99": b"new"}
    assert backend.connections == 1


@pytest.mark.parametrize("key", ["has space", "tab\tkey", "new\nline", "ünïcode", "k" * 251])
def test_keys_that_are_not_protocol_tokens_are_refused(
    backend: MemcachedBackend, key: str
) -> None:
    with pytest.raises(BackendError):
        backend.get(key)
    backend.set("after", b"ok")  # the connection is still usable
    assert backend.get("after") == b"ok"


def test_dead_server_then_restart(memcached_factory: MemcachedFactory) -> None:
    server = memcached_factory()
    backend = MemcachedBackend([server.address], timeout=2.0)
    backend.set("k", b"v")
    assert backend.get("k") == b"v"
    server.kill()
    with pytest.raises(BackendUnavailable):
        backend.get("k")
    server.start()  # same port, empty
    assert backend.get("k") is None
    backend.set("k", b"again")
    assert backend.get("k") == b"again"


def test_get_many_mixed_sizes_and_misses(backend: MemcachedBackend) -> None:
    values = {
        "m:empty": b"",
        "m:small": b"abc",
        "m:lookalike": b"\r\nEND\r\nVALUE m:small 0 3\r\n",
        "m:big": os.urandom(700_000),  # spans many recv calls
        "m:mid": os.urandom(70_000),
    }
    backend.set_many(values)
    keys = [*values, "m:absent", "m:also-absent"]
    assert backend.get_many(keys) == values
    assert backend.get("m:small") == b"abc"  # the socket is in step after the batch
    many = {f"n{i}": str(i).encode() * 10 for i in range(500)}
    backend.set_many(many)
    assert backend.get_many(list(many)) == many


def test_get_many_with_an_unsafe_key_is_refused_whole(backend: MemcachedBackend) -> None:
    backend.set("ok", b"1")
    with pytest.raises(BackendError):
        backend.get_many(["ok", "not ok"])
    assert backend.get_many(["ok"]) == {"ok": b"1"}


def test_map_of_cached_calls_is_one_round_trip(memcached: MemcachedServer) -> None:
    from expcache import Memoized

    backend = MemcachedBackend([memcached.address], timeout=2.0)
    f = Memoized(lambda x: x * 2, backend)
    assert f.map([(i,) for i in range(50)]) == [i * 2 for i in range(50)]
    gets_before = memcached.stat("cmd_get")
    assert f.map([(i,) for i in range(50)] + [{"x": 3}]) == [i * 2 for i in range(50)] + [6]
    assert memcached.stat("cmd_get") - gets_before == 50  # each distinct key fetched once
    assert f.stats.hits == 51
    assert f.stats.misses == 50


# -- large values: one preallocated buffer -------------------------------------------------------
def raw_client(server: MemcachedServer) -> Client:
    # With replies: a noreply delete could still be in flight when the backend reads.
    return Client(("127.0.0.1", server.port), timeout=5, default_noreply=False)


def chunk_keys(server: MemcachedServer, key: str) -> list[str]:
    count, _total, _digest, nonce = _MANIFEST.unpack(raw_client(server).get(key)[8:])
    return [f"{key}:c{i}:{nonce.decode()}" for i in range(count)]


def test_a_large_item_is_received_into_one_buffer(backend: MemcachedBackend) -> None:
    small, large = os.urandom(1000), os.urandom(700_000)  # one recv; many recv_into
    backend.set_many({"small": small, "large": large})
    assert type(backend.get("small")) is bytes and backend.get("small") == small
    got = backend.get("large")
    assert type(got) is bytearray and got == large
    many = backend.get_many(["small", "large"])
    assert many == {"small": small, "large": large} and type(many["large"]) is bytearray


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_chunked_values_are_assembled_in_one_buffer(
    request: pytest.FixtureRequest, topology: str
) -> None:
    if topology == "single":
        servers = [request.getfixturevalue("memcached")]
    else:
        servers = request.getfixturevalue("memcached_cluster")
    b = MemcachedBackend([s.address for s in servers], timeout=5.0)
    value = os.urandom(5 * 2**20 + 17)
    b.set("chunked", value)
    got = b.get("chunked")
    assert type(got) is bytearray and len(got) == len(value) and got == value
    assert b.get_many(["chunked", "absent"]) == {"chunked": value}


def test_a_chunk_of_the_wrong_size_is_a_miss_and_the_socket_stays_in_step(
    backend: MemcachedBackend, memcached: MemcachedServer
) -> None:
    value = os.urandom(3 * 2**20)
    backend.set("wrong", value)
    names = chunk_keys(memcached, "wrong")
    raw_client(memcached).set(names[1], b"short")  # same name, another size
    assert backend.get("wrong") is None
    backend.set("after", b"ok")
    assert backend.get("after") == b"ok" and backend.connections == 1


@pytest.mark.parametrize("missing", [0, 1, 3])
def test_a_missing_chunk_is_a_miss_and_the_socket_stays_in_step(
    backend: MemcachedBackend, memcached: MemcachedServer, missing: int
) -> None:
    value = os.urandom(3 * 2**20)
    backend.set_many({"gap": value, "whole": value[::-1]})
    assert raw_client(memcached).delete(chunk_keys(memcached, "gap")[missing])
    assert backend.get("gap") is None
    assert backend.get_many(["gap", "whole"]) == {"whole": value[::-1]}
    assert backend.get("whole") == value[::-1]


def test_a_flipped_byte_in_a_chunk_is_a_miss(
    backend: MemcachedBackend, memcached: MemcachedServer
) -> None:
    value = bytearray(os.urandom(3 * 2**20))
    backend.set("flip", bytes(value))
    name = chunk_keys(memcached, "flip")[2]
    raw = raw_client(memcached)
    chunk = bytearray(raw.get(name))
    chunk[100] ^= 1
    raw.set(name, bytes(chunk))
    assert backend.get("flip") is None  # the digest over the whole value


def test_a_reply_for_another_key_is_a_protocol_error(hostile: HostileFactory) -> None:
    server = hostile(replies=(b"VALUE other 0 1\r\nx\r\nEND\r\n",), drip=b"")
    b = MemcachedBackend([server.address], timeout=2.0)
    with pytest.raises(BackendError, match="protocol"):
        b.get("mine")
    assert server.disconnected.wait(30)  # the half-understood connection is dropped
