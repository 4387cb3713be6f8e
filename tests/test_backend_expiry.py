"""Expiries above 30 days: memcached reads an exptime above 2592000 as a Unix time.

Sent as relative seconds, a 40-day expiry is a date in January 1970 and the entry is gone at
once (while ``sets`` counts it). The backend converts it to absolute time; each case checks
the entry is readable and that the server's own expiry time for it (``lru_crawler
metadump``) is 40 days after the server's clock.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from expcache.backends import Backend, MemcachedBackend

from .conftest import MemcachedServer

DAY = 86_400
FORTY_DAYS = 40 * DAY


def server_exptimes(server: MemcachedServer) -> dict[str, int]:
    """key -> the server's absolute expiry time (-1: never), from its own metadump."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"lru_crawler metadump all\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            more = s.recv(65536)
            assert more
            buf += more
    out = {}
    for line in buf.decode().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "key" in fields:
            out[fields["key"]] = int(fields["exp"])
    return out


def store_cas(b: Backend, key: str, value: bytes, expire: float) -> None:
    b.set(key, b"old")
    _, token = b.gets(key)
    assert b.cas(key, value, token, expire) is True


def store_touch(b: Backend, key: str, value: bytes, expire: float) -> None:
    b.set(key, value)
    assert b.touch(key, expire) is True


STORES: dict[str, Callable[[Backend, str, bytes, float], Any]] = {
    "set": lambda b, k, v, e: b.set(k, v, e),
    "set_many": lambda b, k, v, e: b.set_many({k: v}, e),
    "add": lambda b, k, v, e: b.add(k, v, e),
    "cas": store_cas,
    "touch": store_touch,
}


@pytest.mark.parametrize("how", sorted(STORES))
def test_forty_days_keeps_the_entry(memcached: MemcachedServer, how: str) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    STORES[how](backend, "long", b"kept", FORTY_DAYS)
    assert backend.get("long") == b"kept"
    now = memcached.stat("time")  # the server's clock
    assert now + FORTY_DAYS - DAY < server_exptimes(memcached)["long"] <= now + FORTY_DAYS + DAY


def test_forty_days_on_a_chunked_value_covers_every_chunk(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    big = os.urandom(3 * 2**20)
    backend.set("big", big, FORTY_DAYS)
    assert backend.get("big") == big
    now = memcached.stat("time")
    exps = {k: e for k, e in server_exptimes(memcached).items() if k.startswith("big")}
    assert len(exps) == 1 + 4  # the manifest and its chunks
    assert all(now + FORTY_DAYS - DAY < e <= now + FORTY_DAYS + DAY for e in exps.values())


@pytest.mark.parametrize("days", [1, 30])
def test_up_to_thirty_days_stays_relative(memcached: MemcachedServer, days: int) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    backend.set("rel", b"v", days * DAY)
    now = memcached.stat("time")
    assert now + days * DAY - 5 <= server_exptimes(memcached)["rel"] <= now + days * DAY + 5


def test_every_backend_keeps_a_forty_day_entry(any_backend: Backend) -> None:
    any_backend.set("long", b"kept", FORTY_DAYS)
    assert any_backend.add("long2", b"kept", FORTY_DAYS)
    assert any_backend.get_many(["long", "long2"]) == {"long": b"kept", "long2": b"kept"}
