"""A process-local store: fast, bounded, and gone with the process.

Useful for tests, notebooks and thread-parallel code. A pickled ``MemoryBackend`` arrives
empty in the other process (entries are not shipped along), so use the disk or memcached
backend to share results between processes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, ClassVar

from .base import Backend

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """An LRU dict of at most ``max_items`` entries, with memcached-like expiry and CAS."""

    name: ClassVar[str] = "memory"
    shared: ClassVar[bool] = False

    def __init__(self, max_items: int | None = 100_000, **breaker: Any) -> None:
        super().__init__(**breaker)
        self.max_items = max_items
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

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key)
            return None if item is None else item[0]

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        with self._lock:
            self._store(key, value, expire)

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._store(key, value, expire)
            return True

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        with self._lock:
            item = self._live(key)
            return (None, None) if item is None else (item[0], item[2])

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        with self._lock:
            item = self._live(key)
            if item is None:
                return None
            if item[2] != token:
                return False
            self._store(key, value, expire)
            return True

    def touch(self, key: str, expire: float) -> bool:
        with self._lock:
            item = self._live(key)
            if item is None:
                return False
            self._data[key] = (item[0], time.monotonic() + expire if expire else 0.0, item[2])
            return True

    def incr(self, key: str, delta: int = 1) -> int:
        with self._lock:
            item = self._live(key)
            value = (int(item[0]) if item is not None else 0) + delta
            self._store(key, str(value).encode(), 0)
            return value

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

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
