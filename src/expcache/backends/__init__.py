"""Pluggable byte stores behind the memoizer (see ``base.Backend`` for the protocol)."""

from .base import Backend, CircuitBreaker, StoreRefused
from .disk import DiskBackend, default_cache_dir
from .memcached import MemcachedBackend, parse_server
from .memory import MemoryBackend
from .null import NullBackend

__all__ = [
    "Backend",
    "CircuitBreaker",
    "DiskBackend",
    "MemcachedBackend",
    "MemoryBackend",
    "NullBackend",
    "StoreRefused",
    "default_cache_dir",
    "parse_server",
]
