"""One contract for every byte store: the memoizer relies on exactly these semantics."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from expcache.backends import Backend, NullBackend
from expcache.errors import ValueTooLarge

from .backend_fixtures import ALL_BACKENDS, make_backend


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
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
