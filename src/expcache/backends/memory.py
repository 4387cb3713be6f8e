"""A process-local store: fast, bounded, and gone with the process.

Useful for tests, notebooks and thread-parallel code. A pickled ``MemoryBackend`` arrives
empty in the other process (entries are not shipped along), so use the disk or memcached
backend to share results between processes.

Like every backend it maps its own failures onto ``BackendError`` (a counter holding a
non-integer, a bug): nothing but the computation's own exceptions may escape a memoized call.
The mapping is a plain ``try`` in each primitive, free until something raises.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from .. import _validate as v
from ..errors import BackendError
from .base import Backend, Data, Scope

__all__ = ["MemoryBackend"]


def _mapped(exc: Exception) -> BackendError:
    return exc if isinstance(exc, BackendError) else BackendError(f"memory: {exc!r}")


class MemoryBackend(Backend):
    """An LRU dict of at most ``max_items`` entries (``None``: unbounded), with memcached-like
    expiry and CAS. A prefix ``clear`` runs under the store's lock: atomic."""

    name: ClassVar[str] = "memory"
    scope: ClassVar[Scope] = "process"

    def __init__(
        self,
        max_items: int | None = 100_000,
        *,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
    ) -> None:
        super().__init__(breaker_threshold=breaker_threshold, breaker_cooldown=breaker_cooldown)
        self.max_items: int | None = v.integer("max_items", max_items, ge=1, allow_none=True)
        self._data: OrderedDict[str, tuple[bytes, float, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._version = 0

    def _live(self, key: str) -> tuple[bytes, float, int] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] and item[1] <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item

    def _store(self, key: str, value: bytes, expire: float) -> None:
        self.check_size(value)
        self._version += 1
        deadline = time.monotonic() + expire if expire else 0.0
        self._data[key] = (bytes(value), deadline, self._version)
        self._data.move_to_end(key)
        if self.max_items is not None:
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def get(self, key: str) -> Data | None:
        try:
            with self._lock:
                item = self._live(key)
                return None if item is None else item[0]
        except Exception as exc:
            raise _mapped(exc) from exc

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        try:
            with self._lock:
                self._store(key, value, expire)
        except Exception as exc:
            raise _mapped(exc) from exc

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        try:
            with self._lock:
                if self._live(key) is not None:
                    return False
                self._store(key, value, expire)
                return True
        except Exception as exc:
            raise _mapped(exc) from exc

    def gets(self, key: str) -> tuple[Data | None, Any]:
        try:
            with self._lock:
                item = self._live(key)
                return (None, None) if item is None else (item[0], item[2])
        except Exception as exc:
            raise _mapped(exc) from exc

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        try:
            with self._lock:
                item = self._live(key)
                if item is None:
                    return None
                if item[2] != token:
                    return False
                self._store(key, value, expire)
                return True
        except Exception as exc:
            raise _mapped(exc) from exc

    def touch(self, key: str, expire: float) -> bool:
        try:
            with self._lock:
                item = self._live(key)
                if item is None:
                    return False
                deadline = time.monotonic() + expire if expire else 0.0
                self._data[key] = (item[0], deadline, item[2])
                return True
        except Exception as exc:
            raise _mapped(exc) from exc

    def incr(self, key: str, delta: int = 1) -> int:
        try:
            with self._lock:
                item = self._live(key)
                value = (int(item[0]) if item is not None else 0) + delta
                self._store(key, str(value).encode(), 0)
                return value
        except Exception as exc:
            raise _mapped(exc) from exc

    def delete(self, key: str) -> None:
        try:
            with self._lock:
                self._data.pop(key, None)
        except Exception as exc:
            raise _mapped(exc) from exc

    # -- administration ----------------------------------------------------------------------
    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        with self._lock:  # a snapshot: the consumer may delete while iterating
            keys = [k for k in self._data if k.startswith(prefix) and self._live_now(k)]
        return iter(keys)

    def _live_now(self, key: str) -> bool:
        deadline = self._data[key][1]
        return not deadline or deadline > time.monotonic()

    def delete_many(self, keys: Iterable[str]) -> int:
        with self._lock:
            return sum(self._data.pop(k, None) is not None for k in keys)

    def clear(self, prefix: str | None = None) -> int:
        with self._lock:
            if prefix is None:
                removed = len(self._data)
                self._data.clear()
                return removed
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                del self._data[key]
            return len(doomed)

    def server_stats(self) -> dict[str, Any]:
        with self._lock:
            size = sum(len(item[0]) for item in self._data.values())
            return {
                "backend": self.name,
                "items": len(self._data),
                "bytes": size,
                "max_items": self.max_items,
            }

    def __len__(self) -> int:
        return len(self._data)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "max_items": self.max_items}

    def __getstate__(self) -> dict[str, Any]:
        return {
            "max_items": self.max_items,
            "breaker_threshold": self.breaker.threshold,
            "breaker_cooldown": self.breaker.cooldown,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
