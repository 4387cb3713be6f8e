"""The embedded default: a persistent store in a local directory, shared by processes.

Built on ``diskcache`` (SQLite index + files for large values), which is process- and
thread-safe, so every worker of a joblib/loky pool or every job of a local Hydra sweep shares
one directory without a server. ``cas`` runs inside a diskcache transaction (an SQLite
``BEGIN IMMEDIATE``), which makes running-moment updates atomic across processes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import diskcache

from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from .base import Backend

__all__ = ["DiskBackend", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$EXPCACHE_DIR``, else ``$XDG_CACHE_HOME/expcache``, else ``~/.cache/expcache``."""
    if env := os.environ.get("EXPCACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "expcache"


@contextmanager
def _mapped(directory: Path) -> Iterator[None]:
    try:
        yield
    except BackendError:
        raise
    except diskcache.Timeout as exc:
        raise BackendTimeout(f"disk cache {directory} is locked by another process") from exc
    except sqlite3.Error as exc:
        raise BackendError(f"disk cache {directory}: {exc}") from exc
    except OSError as exc:
        raise BackendUnavailable(f"disk cache {directory}: {exc}") from exc
    except Exception as exc:  # e.g. a foreign non-bytes value: a counted miss, not a crash
        raise BackendError(f"disk cache {directory}: unexpected {exc!r}") from exc


class DiskBackend(Backend):
    """A diskcache ``Cache`` in ``directory`` (created on first use).

    ``size_limit`` bounds the directory (bytes; diskcache evicts the least recently stored
    entries beyond it). ``timeout`` is how long an operation waits for SQLite's lock.
    """

    name: ClassVar[str] = "disk"
    shared: ClassVar[bool] = True

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        size_limit: int = 4 * 2**30,
        timeout: float = 60.0,
        max_value_size: int = 2**30,
        **breaker: Any,
    ) -> None:
        super().__init__(**breaker)
        if size_limit <= 0:
            raise ConfigError(f"size_limit={size_limit!r}: must be a positive number of bytes")
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.size_limit = size_limit
        self.timeout = timeout
        self.max_value_size = max_value_size
        self._cache: diskcache.Cache | None = None

    @property
    def cache(self) -> diskcache.Cache:
        if self._cache is None:
            with _mapped(self.directory):
                self._cache = diskcache.Cache(
                    str(self.directory), timeout=self.timeout, size_limit=self.size_limit
                )
        return self._cache

    def get(self, key: str) -> bytes | None:
        with _mapped(self.directory):
            value: bytes | None = self.cache.get(key)
            return value

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        cache = self.cache
        with _mapped(self.directory):
            out: dict[str, bytes] = {}
            for key in keys:
                value = cache.get(key)
                if value is not None:
                    out[key] = value
            return out

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        self.check_size(value)
        with _mapped(self.directory):
            self.cache.set(key, bytes(value), expire=expire or None)

    def set_many(self, items: Mapping[str, bytes], expire: float = 0) -> None:
        for value in items.values():
            self.check_size(value)
        cache = self.cache
        with _mapped(self.directory), cache.transact():
            for key, value in items.items():
                cache.set(key, bytes(value), expire=expire or None)

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        self.check_size(value)
        with _mapped(self.directory):
            return bool(self.cache.add(key, bytes(value), expire=expire or None))

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        value = self.get(key)
        return value, value

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        self.check_size(value)
        cache = self.cache
        with _mapped(self.directory), cache.transact():
            current = cache.get(key)
            if current is None:
                return None
            if current != token:
                return False
            cache.set(key, bytes(value), expire=expire or None)
            return True

    def touch(self, key: str, expire: float) -> bool:
        with _mapped(self.directory):
            return bool(self.cache.touch(key, expire=expire or None))

    def incr(self, key: str, delta: int = 1) -> int:
        with _mapped(self.directory):
            return int(self.cache.incr(key, delta, default=0))

    def delete(self, key: str) -> None:
        with _mapped(self.directory):
            self.cache.delete(key)

    def clear(self) -> None:
        with _mapped(self.directory):
            self.cache.clear()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "directory": str(self.directory)}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state
