"""The embedded default: a persistent store in a local directory, shared by processes.

Built on ``diskcache`` (SQLite index + files for large values), which is process- and
thread-safe, so every worker of a joblib/loky pool or every job of a local Hydra sweep shares
one directory without a server. ``cas`` runs inside a diskcache transaction (an SQLite
``BEGIN IMMEDIATE``), which makes running-moment updates atomic across processes; ``set`` is
one SQLite transaction, the one durable write of a miss (stampede protection between the
processes of this host is a file lock beside the directory, owned by the lease module).

A full disk is ``StoreRefused``, not a failure of the store: SQLite's "database or disk is
full" and ``ENOSPC``/``EDQUOT``/``EFBIG`` on a value file mean nothing new can be kept, while
every entry already there still reads, so the memoizer keeps the breaker closed and hits.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import diskcache

from .. import _validate as v
from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError, StoreRefused
from .base import Backend, Data, Scope

__all__ = ["DiskBackend", "default_cache_dir"]

_SQLITE_FULL = 13  # SQLITE_FULL in sqlite3.h (sqlite3.SQLITE_FULL from Python 3.11)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_PAGE = 1000  # keys per enumeration query and per delete transaction


def default_cache_dir() -> Path:
    """``$EXPCACHE_DIR``, else ``$XDG_CACHE_HOME/expcache``, else ``~/.cache/expcache``."""
    if env := os.environ.get("EXPCACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "expcache"


def _file_in_the_way(path: Path) -> Path | None:
    """The first component of ``path`` that exists but is not a directory, if any: the
    cache could never be created there (a check before any work, not an I/O error later)."""
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def _disk_full(exc: sqlite3.Error) -> bool:
    code: int | None = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (code & 0xFF) == _SQLITE_FULL  # the primary code under any extended one
    # Python 3.10 has no codes on sqlite3 exceptions, only SQLite's fixed text for the code
    # (sqlite3_errstr(SQLITE_FULL)); compared whole, never searched.
    return bool(exc.args[:1] == ("database or disk is full",))


@contextmanager
def _mapped(directory: Path) -> Iterator[None]:
    try:
        yield
    except BackendError:
        raise
    except diskcache.Timeout as exc:
        raise BackendTimeout(f"disk cache {directory} is locked by another process") from exc
    except sqlite3.Error as exc:
        if _disk_full(exc):
            raise StoreRefused(f"disk cache {directory}: disk full ({exc})") from exc
        raise BackendError(f"disk cache {directory}: {exc}") from exc
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            raise StoreRefused(f"disk cache {directory}: disk full ({exc})") from exc
        raise BackendUnavailable(f"disk cache {directory}: {exc}") from exc
    except Exception as exc:  # e.g. a foreign non-bytes value: a counted miss, not a crash
        raise BackendError(f"disk cache {directory}: unexpected {exc!r}") from exc


class DiskBackend(Backend):
    """A diskcache ``Cache`` in ``directory`` (created on first use).

    ``size_limit`` bounds the directory (bytes; diskcache evicts the least recently stored
    entries beyond it; below 1 MiB the index alone would evict every entry). ``timeout`` is
    how long an operation waits for SQLite's lock.

    A prefix ``clear`` deletes in transactions of 1000 keys: a concurrent reader sees each
    entry whole or gone, and an entry stored meanwhile under the prefix may survive.
    """

    name: ClassVar[str] = "disk"
    scope: ClassVar[Scope] = "host"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        size_limit: int = 4 * 2**30,
        timeout: float = 60.0,
        max_value_size: int = 2**30,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
    ) -> None:
        super().__init__(breaker_threshold=breaker_threshold, breaker_cooldown=breaker_cooldown)
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise ConfigError(
                param="directory", value=directory, expected="a directory path or null"
            )
        # Where the path comes from is what the message must name: the argument, or the
        # environment variable behind the default.
        param = "directory" if directory else (
            "EXPCACHE_DIR" if os.environ.get("EXPCACHE_DIR") else "directory"
        )
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        blocker = _file_in_the_way(self.directory)
        if blocker is not None:
            raise ConfigError(
                param=param,
                value=str(self.directory),
                expected="a directory path (created on first use) or null",
                hint=f"{blocker} is an existing file, not a directory",
            )
        self.size_limit: int = v.integer(
            "size_limit",
            size_limit,
            ge=2**20,
            hint="a positive number of bytes, at least 1 MiB (the index alone is ~100 KiB, "
            "so a smaller limit would evict every entry as soon as it is stored)",
        )
        self.timeout: float = v.number("timeout", timeout, gt=0, unit="seconds")
        self.max_value_size = v.integer("max_value_size", max_value_size, ge=1024)
        self._cache: diskcache.Cache | None = None

    @property
    def cache(self) -> diskcache.Cache:
        if self._cache is None:
            with _mapped(self.directory):
                self._cache = diskcache.Cache(
                    str(self.directory), timeout=self.timeout, size_limit=self.size_limit
                )
        return self._cache

    @property
    def where(self) -> str:
        return str(self.directory)

    def get(self, key: str) -> Data | None:
        with _mapped(self.directory):
            value: bytes | None = self.cache.get(key)
            return value

    def get_many(self, keys: Sequence[str]) -> dict[str, Data]:
        cache = self.cache
        with _mapped(self.directory):
            out: dict[str, Data] = {}
            for key in keys:
                value = cache.get(key)
                if value is not None:
                    out[key] = value
            return out

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        self.check_size(value)
        with _mapped(self.directory):  # one SQLite transaction (diskcache's own)
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

    def gets(self, key: str) -> tuple[Data | None, Any]:
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

    # -- administration ----------------------------------------------------------------------
    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Live string keys from ``prefix`` on, a page per query (never a cursor held across
        a ``yield``: the consumer may delete while iterating).

        diskcache has no prefix query, and ``iterkeys()`` would scan every entry of the store
        to clear one function: this pages through its (key, raw) index instead.
        """
        cache = self.cache
        after, first = prefix, True
        while True:
            with _mapped(self.directory):
                rows = cache._sql(
                    "SELECT key, expire_time FROM Cache WHERE raw = 1 AND typeof(key) = 'text'"
                    f" AND key {'>=' if first else '>'} ? ORDER BY key LIMIT ?",
                    (after, _PAGE),
                ).fetchall()
            now = time.time()
            for key, expire_time in rows:
                if not key.startswith(prefix):
                    return
                if expire_time is None or expire_time > now:
                    yield key
            if len(rows) < _PAGE:
                return
            after, first = rows[-1][0], False

    def delete_many(self, keys: Iterable[str]) -> int:
        cache = self.cache
        pending = list(keys)
        deleted = 0
        for start in range(0, len(pending), _PAGE):
            with _mapped(self.directory), cache.transact():
                deleted += sum(bool(cache.delete(k)) for k in pending[start : start + _PAGE])
        return deleted

    def clear(self, prefix: str | None = None) -> int:
        if prefix is not None:
            return self.delete_many(list(self.iter_keys(prefix)))
        with _mapped(self.directory):
            return int(self.cache.clear())

    def server_stats(self) -> dict[str, Any]:
        """``items`` counts entries past their expiry until diskcache culls them."""
        cache = self.cache
        with _mapped(self.directory):
            return {
                "backend": self.name,
                "directory": str(self.directory),
                "items": len(cache),
                "bytes": int(cache.volume()),
                "size_limit": self.size_limit,
            }

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
