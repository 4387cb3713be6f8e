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
