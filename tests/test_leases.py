"""Guarantee 1: no call waits on a lease for more than about ``lease_ttl`` after its holder
stops making progress, and no garbage or foreign lease makes it wait longer than that.

Against real memcached processes (paused with SIGSTOP, given garbage) and real disk caches.
Interrupts are raised for real at the exact step under test by a backend subclass whose
``set`` raises ``KeyboardInterrupt``: the step the issue reproduced ("interrupted while
storing"). Waiting is measured by ``stats.lease_waits`` (a call that slept at least once),
never by a clock: a call that took over at once never waited.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from expcache import BackendUnavailable, DiskBackend, MemcachedBackend, Memoized, MemoryBackend
from expcache import lease as lease_module
from expcache import renewer as renewer_module
from expcache.backends import Backend

from .conftest import MemcachedServer

LONG = 600.0  # a lease TTL / wait no test could sit out: waiting at all fails the test


def NO_DECODE(data: bytes) -> None:
    return None


class InterruptingMemcached(MemcachedBackend):
    """Raises KeyboardInterrupt when the holder stores its value (after computing)."""

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        if not key.endswith(":lease"):
            raise KeyboardInterrupt
        super().set(key, value, expire)


class InterruptingDisk(DiskBackend):
    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        raise KeyboardInterrupt


def raw(server: MemcachedServer) -> Client:
    return Client(("127.0.0.1", server.port), timeout=5)


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("kind", ["memcached", "disk"])
def test_interrupt_while_storing_releases_the_lease(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend: Backend
    if kind == "memcached":
        server: MemcachedServer = request.getfixturevalue("memcached")
        backend = InterruptingMemcached([server.address], timeout=5)
        healthy: Backend = MemcachedBackend([server.address], timeout=5)
    else:
        backend = InterruptingDisk(tmp_path / "cache")
        healthy = DiskBackend(tmp_path / "cache")
    holder = Memoized(square, backend, lease_ttl=LONG, lease_max_wait=LONG)
    with pytest.raises(KeyboardInterrupt):
        holder(3)
    assert renewer_module.renewer.held == 0  # not renewed for the rest of the process
    if kind == "memcached":
        assert raw(server).get(holder.cache_key(3) + ":lease") is None
    other = Memoized(square, healthy, lease_ttl=LONG, lease_max_wait=LONG)
    assert other(3) == 9
    assert (other.stats.misses, other.stats.lease_waits) == (1, 0)  # took it at once


class LostStore(MemcachedBackend):
    """The value's ``set`` is lost on the way (a connection reset mid-send): the server
    never sees it, the lease it holds stays there, "holding"."""

    lose = True

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        if self.lose and not key.endswith(":lease"):
            self.lose = False
            raise BackendUnavailable("connection reset while sending the value")
        super().set(key, value, expire)


def test_a_failed_store_costs_one_failure_and_no_wait_in_this_process(
    memcached: MemcachedServer,
) -> None:
    """One failed operation per call (no release round trip after the store failed), and
    the lease left on the server -- TTL no test could sit out -- is recognised by this
    process as its own abandoned lease and taken over at once by the next call."""
    backend = LostStore([memcached.address], timeout=5)
    m = Memoized(square, backend, lease_ttl=LONG, lease_max_wait=LONG)
    assert m(1) == 1
    assert (m.stats.errors, m.stats.timeouts, m.stats.sets) == (1, 0, 0)
    assert renewer_module.renewer.held == 0
    left = raw(memcached).get(m.cache_key(1) + ":lease")
    assert left is not None and left[3:4] == b"H"  # still there, still "holding"
    assert m(1) == 1
    assert (m.stats.misses, m.stats.lease_waits, m.stats.sets) == (2, 0, 1)
    assert m(1) == 1 and m.stats.hits == 1


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(
    "leftover",
    ["garbage", "empty", "foreign-format", "overdue", "wrong-hmac"],
)
def test_garbage_or_foreign_lease_is_taken_over(
    memcached: MemcachedServer, leftover: str, signed: bool
) -> None:
    key16 = "k" * 16 if signed else None
    m = Memoized(square, MemcachedBackend([memcached.address], timeout=5), lease_ttl=LONG,
                 lease_max_wait=LONG, signing_key=key16)
    lease_key = m.cache_key(4) + ":lease"
    if leftover == "garbage":
        value = b"\x00garbage\xff" * 3
    elif leftover == "empty":
        value = b""
    elif leftover == "foreign-format":
        value = b"XL1" + b"H" + b"0" * 20
    elif leftover == "overdue":  # well-formed, but its holder's deadline passed long ago
        body = struct.pack("<3sc8sd", b"XL2", b"H", b"t" * 8, time.time() - 10 * LONG)
        probe = lease_module.StoreLease(
            m._core.guard, m.cache_key(4), NO_DECODE, ttl=LONG, max_wait=LONG,
            signing_key=m._core.serde.signing_key,
        )
        value = body if not signed else body + probe._mac(body)
    else:  # wrong-hmac: a live-looking lease signed with another key (or unsigned)
        other = lease_module.StoreLease(
            m._core.guard, m.cache_key(4), NO_DECODE, ttl=LONG, max_wait=LONG,
            signing_key=None if signed else b"o" * 16,
        )
        value = other.value(b"H")
    raw(memcached).set(lease_key, value, expire=0)  # no expiry: it would stay for ever
    assert m(4) == 16
    assert (m.stats.misses, m.stats.lease_waits, m.stats.hits) == (1, 0, 0)
    assert m(4) == 16 and m.stats.hits == 1


def test_a_live_foreign_holder_is_waited_for(memcached: MemcachedServer) -> None:
    """The other side of the rule: a parseable lease of a live holder is respected."""
    backend = MemcachedBackend([memcached.address], timeout=5)
    holder = Memoized(square, backend, lease_ttl=LONG)
    lease = lease_module.StoreLease(
        holder._core.guard, holder.cache_key(5), NO_DECODE, ttl=LONG, max_wait=LONG,
        signing_key=None,
    )
    assert lease.acquire() is lease_module.Claim.OWNED
    try:
        waiter = Memoized(square, backend, lease_ttl=LONG, lease_max_wait=0.05)
        assert waiter(5) == 25  # gave up after lease_max_wait and computed
        assert waiter.stats.lease_waits == 1
    finally:
        lease.release()
    assert raw(memcached).get(holder.cache_key(5) + ":lease") is None


def test_a_long_computation_is_renewed_and_keeps_its_lease(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    start = renewer_module.renewer.renewals
    deadlines: list[float] = []

    def deadline(key: str) -> float:
        data = raw(memcached).get(key)
        assert data is not None
        return float(struct.unpack("<3sc8sd", data[:20])[3])

    def slow(x: int) -> int:
        key = m.cache_key(x) + ":lease"
        deadlines.append(deadline(key))
        # renewals are due every ttl/3 (memcached's TTLs are whole seconds) while we block
        assert renewer_module.renewer.wait_renewals(start + 3, 60)
        deadlines.append(deadline(key))
        return x

    m = Memoized(slow, backend, signature=b"slow", lease_ttl=1.5)
    assert m(6) == 6
    assert deadlines[1] > deadlines[0]  # the holder's deadline moved forward
    assert renewer_module.renewer.held == 0
    assert m.stats.sets == 1


def test_short_computations_send_no_renewals(memcached: MemcachedServer) -> None:
    m = Memoized(square, MemcachedBackend([memcached.address], timeout=5), lease_ttl=30)
    before = renewer_module.renewer.renewals
    for x in range(50):
        m(x)
    assert renewer_module.renewer.renewals == before
    assert renewer_module.renewer.held == 0


def test_function_error_releases_the_lease_and_is_counted(shared_backend: Backend) -> None:
    boom = ValueError("boom")

    def failing(x: int) -> int:
        raise boom

    m = Memoized(
        failing, shared_backend, signature=b"failing", lease_ttl=LONG, lease_max_wait=LONG
    )
    with pytest.raises(ValueError, match="boom") as info:
        m(1)
    assert info.value is boom  # unchanged
    s = m.stats
    assert (s.failed, s.misses, s.sets, s.calls, s.evaluations) == (1, 0, 0, 1, 1)
    ok = Memoized(square, shared_backend, signature=b"x", lease_ttl=LONG, lease_max_wait=LONG)
    assert ok(1) == 1
    retry = Memoized(
        failing, shared_backend, signature=b"failing", lease_ttl=LONG, lease_max_wait=LONG
    )
    with pytest.raises(ValueError, match="boom"):
        retry(1)
    assert retry.stats.lease_waits == 0  # the first failure left nothing to wait for


def wait_until(predicate: Any, timeout: float = 60) -> bool:
    """Block until ``predicate()`` holds (a counter reached a value), bounded."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.001)
    return True


def test_threads_of_a_process_local_backend_compute_once() -> None:
    ran: list[int] = []
    gate = threading.Event()

    def slow(x: int) -> int:
        ran.append(x)
        gate.wait(60)
        return x * 2

    m = Memoized(slow, MemoryBackend(), signature=b"slow-threads")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(m(21))) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        # every other thread is waiting for the one computing before it may finish
        assert wait_until(lambda: m.stats.lease_waits == 5)
    finally:
        gate.set()
        for t in threads:
            t.join()
    assert results == [42] * 6 and ran == [21]
    assert (m.stats.misses, m.stats.hits) == (1, 5)
