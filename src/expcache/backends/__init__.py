"""Pluggable byte stores behind the memoizer (see ``base.Backend`` for the protocol)."""

from .base import PROBE_KEY, Backend, CircuitBreaker, Data, Scope, StoreRefused
from .disk import DiskBackend, default_cache_dir
from .memcached import MemcachedBackend, parse_server
from .memory import MemoryBackend
from .null import NullBackend

__all__ = [
    "PROBE_KEY",
    "Backend",
    "CircuitBreaker",
    "Data",
    "DiskBackend",
    "MemcachedBackend",
    "MemoryBackend",
    "NullBackend",
    "Scope",
    "StoreRefused",
    "default_cache_dir",
    "parse_server",
]
