"""One deadline per memcached operation, against real hostile TCP servers.

A server that sends one byte every ``INTERVAL`` never trips a per-read timeout. Every operation
must still end in ``BackendTimeout`` about ``timeout`` after it started, so the server
manages to send about ``TIMEOUT / INTERVAL`` bytes before the client hangs up. The bound
asserted is three times that (a loaded machine delays both sides); an operation bounded per
read would read until the server's cap of ``CAP`` bytes (20 times the expectation).
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expcache.backends import MemcachedBackend
from expcache.backends.memcached import _CHUNK_MAGIC as CHUNK_MAGIC
from expcache.backends.memcached import _MANIFEST as MANIFEST
from expcache.errors import BackendError, BackendTimeout

from .conftest import HostileFactory, HostileServer

TIMEOUT = 0.3
INTERVAL = 0.01
EXPECTED = int(TIMEOUT / INTERVAL)  # bytes a dripper sends within one timeout
BOUND = 3 * EXPECTED
CAP = 20 * EXPECTED

OPS: dict[str, Callable[[MemcachedBackend], Any]] = {
    "get": lambda b: b.get("k"),
    "get_many": lambda b: b.get_many(["k", "k2", "k3"]),
    "set": lambda b: b.set("k", b"v"),
    "set_chunked": lambda b: b.set("k", os.urandom(3 * 2**20)),
    "set_many": lambda b: b.set_many({"k": b"1", "k2": b"2"}),
    "add": lambda b: b.add("k", b"v"),
    "gets": lambda b: b.gets("k"),
    "cas": lambda b: b.cas("k", b"v", b"1"),
    "touch": lambda b: b.touch("k", 10),
    "incr": lambda b: b.incr("k"),
    "delete": lambda b: b.delete("k"),
    "delete_many": lambda b: b.delete_many(["k", "k2"]),
}


def bounded(servers: list[HostileServer], event: threading.Event) -> int:
    """Wait until the client hung up on a dripping server; the bytes they managed to send."""
    assert event.wait(30), "the client never hung up"
    return sum(s.dripped for s in servers)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_a_dripping_server_costs_one_timeout_per_operation(
    hostile: HostileFactory, op: str, topology: str
) -> None:
    event = threading.Event()
    n = 1 if topology == "single" else 2
    servers = [hostile(interval=INTERVAL, cap=CAP, disconnected=event) for _ in range(n)]
    backend = MemcachedBackend([s.address for s in servers], timeout=TIMEOUT, connect_timeout=5)
    with pytest.raises(BackendTimeout):
        OPS[op](backend)
    assert bounded(servers, event) <= BOUND


def test_chunk_reassembly_shares_the_operations_deadline(hostile: HostileFactory) -> None:
    """The manifest comes at once, the chunks trickle: still one timeout for the whole get."""
    manifest = CHUNK_MAGIC + MANIFEST.pack(2, 2 * 2**20, bytes(16), b"abcd1234")
    reply = b"VALUE k 0 %d\r\n%s\r\nEND\r\n" % (len(manifest), manifest)
    server = hostile(replies=(reply,), interval=INTERVAL, cap=CAP)
    backend = MemcachedBackend([server.address], timeout=TIMEOUT, connect_timeout=5)
    with pytest.raises(BackendTimeout):
        backend.get("k")
    assert bounded([server], server.disconnected) <= BOUND
    assert server.connections == 1  # the manifest and the chunks: one connection


@pytest.mark.parametrize("op", ["get", "get_many"])
def test_a_value_header_then_a_trickle_of_its_bytes(hostile: HostileFactory, op: str) -> None:
    server = hostile(
        prefix=b"VALUE k 0 1000000\r\n" + b"a" * 1000, drip=b"a", interval=INTERVAL, cap=CAP
    )
    backend = MemcachedBackend([server.address], timeout=TIMEOUT, connect_timeout=5)
    with pytest.raises(BackendTimeout):
        OPS[op](backend)
    assert bounded([server], server.disconnected) <= BOUND


@pytest.mark.parametrize("op", ["get", "get_many", "gets"])
def test_a_value_header_then_silence_closes_the_connection(
    hostile: HostileFactory, op: str
) -> None:
    """A half-read reply must never be read as the next command's: the client hangs up."""
    cas = b" 1" if op == "gets" else b""
    server = hostile(prefix=b"VALUE k 0 1000000%s\r\n" % cas + b"a" * 1000, drip=b"")
    backend = MemcachedBackend([server.address], timeout=TIMEOUT, connect_timeout=5)
    with pytest.raises(BackendTimeout):
        OPS[op](backend)
    assert server.disconnected.wait(30)


@pytest.mark.parametrize("size", [2**40, 10**30])
def test_an_absurd_value_size_is_refused_before_allocating(
    hostile: HostileFactory, size: int
) -> None:
    server = hostile(prefix=b"VALUE k 0 %d\r\n" % size, drip=b"")
    backend = MemcachedBackend([server.address], timeout=TIMEOUT, connect_timeout=5)
    with pytest.raises(BackendError, match="exceeds the limit") as info:
        backend.get("k")
    assert not isinstance(info.value, BackendTimeout)  # refused at once, not waited for
    assert server.disconnected.wait(30)


def test_tls_reads_are_bounded_too(hostile: HostileFactory, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = hostile(tls=context, interval=INTERVAL, cap=CAP)
    backend = MemcachedBackend(
        [server.address], timeout=TIMEOUT, connect_timeout=5, tls=True, tls_ca_file=str(cert)
    )
    with pytest.raises(BackendTimeout):
        backend.get("k")
    assert bounded([server], server.disconnected) <= BOUND
