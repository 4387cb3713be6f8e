"""Every constructor argument of every backend is checked before any work.

A bad value is a ``ConfigError`` carrying ``param`` (``servers[1]``), ``value`` and
``expected``: the Hydra app relocates it (``cache.servers[1]``) without parsing a message. The
cases include what the seed accepted and then lost work to: a disk ``timeout=-1`` (498 of 800
samples lost), ``max_value_size=0`` (nothing stored), ``max_items=0`` ("20 stored", nothing
kept) and ``max_items=-1`` (a KeyError out of the first call).
"""

from __future__ import annotations

import inspect
import math
import ssl
from pathlib import Path
from typing import Any

import pytest

from expcache.backends import DiskBackend, MemcachedBackend, MemoryBackend, NullBackend
from expcache.errors import BackendError, ConfigError

BACKENDS = [DiskBackend, MemcachedBackend, MemoryBackend, NullBackend]

BREAKER = [
    ("breaker_threshold", 0),
    ("breaker_threshold", -1),
    ("breaker_threshold", 1.5),
    ("breaker_threshold", True),
    ("breaker_threshold", "3"),
    ("breaker_cooldown", -1),
    ("breaker_cooldown", math.nan),
    ("breaker_cooldown", "5"),
]

CASES: list[tuple[type, str, Any]] = [
    *[(cls, param, value) for cls in BACKENDS for param, value in BREAKER],
    (DiskBackend, "timeout", -1),
    (DiskBackend, "timeout", 0),
    (DiskBackend, "timeout", math.inf),
    (DiskBackend, "timeout", "60"),
    (DiskBackend, "timeout", True),
    (DiskBackend, "size_limit", 0),
    (DiskBackend, "size_limit", -1),
    (DiskBackend, "size_limit", 1000),  # below the index's own size: every entry evicted
    (DiskBackend, "size_limit", 2.0**32),
    (DiskBackend, "max_value_size", 0),
    (DiskBackend, "max_value_size", -1),
    (DiskBackend, "max_value_size", 100),
    (DiskBackend, "directory", 42),
    (MemcachedBackend, "connect_timeout", 0),
    (MemcachedBackend, "connect_timeout", -1),
    (MemcachedBackend, "timeout", 0),
    (MemcachedBackend, "timeout", -0.5),
    (MemcachedBackend, "timeout", math.nan),
    (MemcachedBackend, "timeout", "0.5"),
    (MemcachedBackend, "dead_timeout", -1),
    (MemcachedBackend, "item_size", 10),
    (MemcachedBackend, "item_size", 2**31),
    (MemcachedBackend, "item_size", 2.0**20),
    (MemcachedBackend, "max_value_size", 0),
    (MemcachedBackend, "max_value_size", -1),
    (MemcachedBackend, "no_delay", "yes"),
    (MemcachedBackend, "tls", "false"),
    (MemcachedBackend, "tls_context", "not a context"),
    (MemcachedBackend, "tls_ca_file", 42),
    (MemcachedBackend, "tls_ca_file", ""),
    (MemcachedBackend, "tls_key_file", "key.pem"),  # without tls_cert_file
    (MemoryBackend, "max_items", 0),
    (MemoryBackend, "max_items", -1),
    (MemoryBackend, "max_items", 1.5),
    (MemoryBackend, "max_items", "100"),
]


@pytest.mark.parametrize(
    ("cls", "param", "value"), CASES, ids=[f"{c.__name__}-{p}={v!r}" for c, p, v in CASES]
)
def test_bad_values_are_refused_naming_the_parameter(cls: type, param: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**{param: value})
    assert info.value.param == param
    assert info.value.expected
    assert str(info.value).startswith(param)


@pytest.mark.parametrize(
    ("servers", "param"),
    [
        ([], "servers"),
        ((), "servers"),
        (42, "servers"),
        (b"127.0.0.1:11211", "servers"),
        (["localhost"], "servers[0]"),
        (["127.0.0.1:11211", "localhost"], "servers[1]"),
        (["h:0"], "servers[0]"),
        (["h:65536"], "servers[0]"),
        (["h:99999"], "servers[0]"),
        (["h:-1"], "servers[0]"),
        (["h:port"], "servers[0]"),
        ([":11211"], "servers[0]"),
        (["has space:11211"], "servers[0]"),
        ("a:1,b:2", "servers[0]"),  # one string is one server; a cluster is a list
        (["a:1", 42], "servers[1]"),
        (["a:1", None], "servers[1]"),
        ([("h", "x")], "servers[0]"),
        ([("h", True)], "servers[0]"),
        ([("h", 1, 2)], "servers[0]"),
        (["a:1", "b:2", "a:1"], "servers[2]"),  # a duplicate: the ring would drop it silently
        (["127.0.0.1:11211", ("127.0.0.1", 11211)], "servers[1]"),
    ],
)
def test_bad_servers_name_the_entry(servers: Any, param: str) -> None:
    with pytest.raises(ConfigError) as info:
        MemcachedBackend(servers)
    assert info.value.param == param
    assert info.value.has_value and info.value.expected


@pytest.mark.parametrize(
    "servers",
    ["h:1", ("h", 1), ["h:1", "[::1]:2", ("10.0.0.1", 3)], ("h:1", "g:2"), ["h.example.org:65535"]],
)
def test_good_servers_are_accepted(servers: Any) -> None:
    backend = MemcachedBackend(servers)
    assert backend.connections == 0  # nothing connects at construction


def test_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        DiskBackend(path)
    assert info.value.param == "directory"


def test_good_values_pass_and_are_normalised(tmp_path: Path) -> None:
    disk = DiskBackend(tmp_path, timeout=1, size_limit=2**20, max_value_size=1024)
    assert isinstance(disk.timeout, float) and disk.size_limit == 2**20
    assert MemoryBackend(None).max_items is None and MemoryBackend(1).max_items == 1
    mc = MemcachedBackend("h:1", timeout=1, dead_timeout=0, tls_context=ssl.create_default_context())
    assert mc.timeout == 1.0 and mc.tls
    assert NullBackend(breaker_threshold=1, breaker_cooldown=0).breaker.threshold == 1


@pytest.mark.parametrize("cls", BACKENDS)
def test_every_option_is_a_typed_keyword_with_its_default(cls: type) -> None:
    """The Hydra app derives its schemas from these signatures: one source of truth."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params, cls
    for p in params:
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY), (cls, p.name)
        assert p.default is not p.empty, (cls, p.name)
        assert p.annotation is not p.empty, (cls, p.name)
    names = {p.name for p in params}
    assert {"breaker_threshold", "breaker_cooldown"} <= names


def test_memory_backend_maps_its_own_errors() -> None:
    backend = MemoryBackend()
    backend.set("counter", b"not a number")
    with pytest.raises(BackendError):
        backend.incr("counter")


def test_memory_backend_keeps_what_it_reports() -> None:
    backend = MemoryBackend(max_items=1)
    backend.set("a", b"1")
    assert backend.get("a") == b"1"  # max_items=0 would have dropped it at once
