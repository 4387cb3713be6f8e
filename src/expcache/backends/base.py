"""The backend protocol: a byte store with the few atomic primitives the memoizer needs.

Backends know nothing of keys, values or policies: they move ``bytes`` under ``str`` keys and
map their dependency's failures onto ``BackendError`` subclasses. Everything else (envelopes,
statistics, fallbacks) lives above them, so one contract test suite covers every backend.

``gets``/``cas`` follow memcached: ``gets`` returns the value with an opaque token, ``cas``
stores only if the entry is unchanged since, and returns ``True`` (stored), ``False``
(changed meanwhile) or ``None`` (gone meanwhile). ``add`` stores only if absent.

Every backend owns a ``CircuitBreaker``, shared by all memoized functions using it, so a dead
or hung server costs a few failed operations per cool-down, not one per call.

Failures a backend raises, and what the memoizer makes of them: ``BackendTimeout`` and
``BackendUnavailable`` (and plain ``BackendError``) count towards the breaker; ``ValueTooLarge``
and ``StoreRefused`` come from a server that answered, so they are counted but leave the
breaker closed. Nothing else may escape a primitive: backends map every exception of their
dependency, expected or not, onto ``BackendError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from ..errors import ConfigError, StoreRefused, ValueTooLarge

__all__ = ["Backend", "CircuitBreaker", "StoreRefused"]


class CircuitBreaker:
    """Closed -> (``threshold`` consecutive failures) -> open for ``cooldown`` s -> half-open.

    While open, ``allow()`` is False and callers skip the backend. Once the cool-down has
    passed, ``allow()`` lets exactly one caller through as a probe and pushes the next probe
    one more cool-down away: the probe's success closes the breaker, its failure re-opens it.
    Because the probe slot is a deadline rather than a flag, a probe that never reports back
    (its thread died, an unexpected exception) cannot wedge the breaker open for ever.

    ``clock`` is injectable (a zero-argument callable returning seconds) so tests and
    simulations can move time without sleeping.
    """

    def __init__(
        self,
        threshold: int = 3,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"breaker_threshold={threshold!r}: must be an integer >= 1")
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown < 0:
            raise ConfigError(f"breaker_cooldown={cooldown!r}: must be a number of seconds >= 0")
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self.clock = clock
        self.trips = 0  # closed -> open transitions
        self.probes = 0  # callers let through while open
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        """Consecutive failures so far (0 when healthy)."""
        return self._failures

    @property
    def is_open(self) -> bool:
        return self._failures >= self.threshold

    def allow(self) -> bool:
        if self._failures < self.threshold:  # the hot path: no lock while healthy
            return True
        with self._lock:
            if self._failures < self.threshold:
                return True
            now = self.clock()
            if now < self._open_until:
                return False
            self._open_until = now + self.cooldown
            self.probes += 1
            return True

    def success(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures == self.threshold:
                self.trips += 1
            if self._failures >= self.threshold:
                self._open_until = self.clock() + self.cooldown

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
