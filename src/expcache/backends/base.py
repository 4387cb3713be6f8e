"""The backend protocol: a byte store with the few atomic primitives the memoizer needs.

Backends know nothing of keys, values or policies: they move ``bytes`` under ``str`` keys and
map their dependency's failures onto ``BackendError`` subclasses. Everything else (envelopes,
statistics, fallbacks) lives above them, so one contract test suite covers every backend.

``gets``/``cas`` follow memcached: ``gets`` returns the value with an opaque token, ``cas``
stores only if the entry is unchanged since, and returns ``True`` (stored), ``False``
(changed meanwhile) or ``None`` (gone meanwhile). ``add`` stores only if absent.

Every backend owns a ``CircuitBreaker``, shared by all memoized functions using it, so a dead
or hung server costs a few failed operations per cool-down, not one per call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..errors import ValueTooLarge

__all__ = ["Backend", "CircuitBreaker"]


class CircuitBreaker:
    """Closed -> (``threshold`` consecutive failures) -> open for ``cooldown`` s -> half-open.

    While open, ``allow()`` is False and callers skip the backend. After the cool-down one
    caller at a time is let through as a probe; its success closes the breaker, its failure
    re-opens it for another cool-down.
    """

    def __init__(self, threshold: int = 3, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._failures >= self.threshold

    def allow(self) -> bool:
        if self._failures < self.threshold:
            return True
        with self._lock:
            if self._failures < self.threshold:
                return True
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0
                self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._failures >= self.threshold:
                self._open_until = time.monotonic() + self.cooldown

    def __getstate__(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "cooldown": self.cooldown}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


class Backend:
    """Base class and protocol of a byte store. Subclasses override the primitives.

    ``max_value_size`` is the largest value ``set`` accepts (after chunking, where the backend
    chunks); larger values raise ``ValueTooLarge``. ``shared`` says whether other processes see
    the entries (decides whether stampede leases are worth a round trip).
    """

    name: ClassVar[str] = "base"
    shared: ClassVar[bool] = True

    def __init__(self, *, breaker_threshold: int = 3, breaker_cooldown: float = 5.0) -> None:
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self.max_value_size: int | None = None

    def check_size(self, value: bytes) -> None:
        """Refuse a value above ``max_value_size`` before any I/O."""
        if self.max_value_size is not None and len(value) > self.max_value_size:
            raise ValueTooLarge(
                f"{self.name}: value of {len(value)} bytes exceeds "
                f"max_value_size={self.max_value_size}"
            )

    # -- primitives ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key in keys:
            value = self.get(key)
            if value is not None:
                out[key] = value
        return out

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        raise NotImplementedError

    def set_many(self, items: Mapping[str, bytes], expire: float = 0) -> None:
        for key, value in items.items():
            self.set(key, value, expire)

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        raise NotImplementedError

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        raise NotImplementedError

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        raise NotImplementedError

    def touch(self, key: str, expire: float) -> bool:
        raise NotImplementedError

    def incr(self, key: str, delta: int = 1) -> int:
        """Atomically add ``delta`` to a counter (created at 0), returning the new value."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Remove every entry (tests and the ``cache_clear`` of a memoized function)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop connections; the next operation reopens them."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``cache_stats.json``."""
        return {"backend": self.name}

    def __repr__(self) -> str:
        details = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "backend")
        return f"{type(self).__name__}({details})"
