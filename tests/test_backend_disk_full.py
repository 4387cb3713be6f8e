"""A full disk, for real: a 2 MiB tmpfs that runs out of space under the disk cache.

Both ways diskcache writes are covered: small values inside SQLite ("database or disk is
full") and large ones in value files (``ENOSPC``). Either is ``StoreRefused``: the store is
alive, everything stored before still reads, and the memoizer keeps its breaker closed (it
warns once and keeps hitting) instead of treating the disk as a failing backend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from expcache import Memoized
from expcache.backends import DiskBackend
from expcache.errors import StoreRefused

SMALL = 4000  # < diskcache's 32 KiB: stored inside SQLite
LARGE = 200_000  # a value file of its own


def value(i: int, size: int) -> bytes:
    return bytes([i % 251]) * size


def fill(backend: DiskBackend, size: int) -> int:
    """Store until the disk refuses; how many were stored (never a different error)."""
    for i in range(100_000):
        try:
            backend.set(f"k{i}", value(i, size))
        except StoreRefused:
            return i
    pytest.fail("a 2 MiB filesystem never filled up")


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["sqlite", "value-file"])
def test_a_full_disk_refuses_stores_and_keeps_serving_reads(tiny_fs: Path, size: int) -> None:
    backend = DiskBackend(tiny_fs / "cache", size_limit=2**30)
    stored = fill(backend, size)
    assert stored > 0
    with pytest.raises(StoreRefused):
        backend.set("one-more", value(1, size))
    assert backend.get("k0") == value(0, size)
    assert backend.get_many([f"k{i}" for i in range(stored)]) == {
        f"k{i}": value(i, size) for i in range(stored)
    }
    assert backend.server_stats()["items"] == stored


def test_the_memoizer_keeps_hitting_on_a_full_disk(
    tiny_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = DiskBackend(tiny_fs / "cache", size_limit=2**30)
    m = Memoized(lambda i: value(i, LARGE), backend, time_threshold=0, lease=False)
    m(0)
    assert m.stats.sets == 1
    fill(backend, LARGE)
    with caplog.at_level(logging.WARNING, logger="expcache"):
        for i in range(1, 6):
            assert m(i) == value(i, LARGE)  # computed, not stored
        for _ in range(3):
            assert m(0) == value(0, LARGE)  # still a hit
    assert m.stats.hits == 3
    assert backend.breaker.failures == 0 and not backend.breaker.is_open
    assert m.stats.errors == 5 and m.stats.timeouts == 0
    assert len([r for r in caplog.records if "not cached" in r.message]) == 1
