"""Backend construction shared by the contract tests (one suite over every backend)."""

from __future__ import annotations

from pathlib import Path

from expcache.backends import Backend, DiskBackend, MemcachedBackend, MemoryBackend

SHARED_BACKENDS = ["memcached", "disk"]
ALL_BACKENDS = ["memcached", "disk", "memory"]


def make_backend(kind: str, tmp_path: Path, memcached_address: str | None) -> Backend:
    if kind == "memcached":
        assert memcached_address is not None
        return MemcachedBackend([memcached_address], timeout=2.0)
    if kind == "disk":
        return DiskBackend(tmp_path / "cache")
    if kind == "memory":
        return MemoryBackend()
    raise ValueError(kind)


class FakeClock:
    """A clock the test moves by hand, for circuit breakers (``backend.breaker.clock``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
