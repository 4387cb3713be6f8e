"""The failure policy between a memoized function and its backend.

A backend raises ``BackendError`` subclasses; the call paths never see them. Each operation
goes through ``Guard.run``, which returns the operation's result or a typed ``Outcome``:

- ``Outcome.FAILED``: the backend is failing (timeout, lost connection, server error) or its
  circuit breaker is open. The call computes without it and stops using it for this call,
  so a hung server costs at most one timeout per call; the breaker bounds how many calls
  pay even that.
- ``Outcome.REFUSED``: the backend answered but kept nothing (full, ``-M``, a disk out of
  space, a value too large). Reads keep working, so the breaker stays closed.

Logging is per *incident*, not per call: the first failure of a kind is a WARNING, the
recovery an INFO line, and everything between is counted on ``stats`` and logged at DEBUG. A
store that flaps (a full memcached refusing some sizes and not others, a breaker probe that
fails again) warns at most once a minute per kind. Two
kinds are kept apart because they end differently: a failing backend recovers with any
successful operation, a refusing store only with a successful *write* (a full disk keeps
serving reads, and a read must not declare it healthy again — that was the "failed"/"back"
pair logged on every call).

The breaker belongs to the backend and is shared by every function using it; the counters
and incident state belong to one function (``Guard`` is per memoized function).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .backends.base import Backend
from .errors import BackendError, BackendTimeout, StoreRefused, ValueTooLarge
from .stats import Recorder

__all__ = ["Guard", "Outcome"]

log = logging.getLogger("expcache")


class Outcome(enum.Enum):
    """Why a guarded operation has no result."""

    FAILED = "failed"
    REFUSED = "refused"


_QUIET: Final = 60.0  # seconds during which a new incident of a kind is logged at DEBUG
FAILED: Final = Outcome.FAILED
REFUSED: Final = Outcome.REFUSED


class Guard:
    """One memoized function's view of its backend: operations in, results or outcomes out."""

    __slots__ = (
        "_last", "_lock", "_warned", "backend", "breaker", "down", "name", "rec", "refusing",
    )

    def __init__(self, backend: Backend, rec: Recorder, name: str) -> None:
        self.backend = backend
        self.breaker = backend.breaker
        self.rec = rec
        self.name = name
        self.down = False  # in a failing-backend incident
        self.refusing = False  # in a store-refuses-writes incident
        self._warned: set[str] = set()
        self._last: dict[str, float] = {}  # kind -> when its last incident was warned about
        self._lock = threading.Lock()

    # -- operations ----------------------------------------------------------------------------
    def allow(self) -> bool:
        return self.breaker.allow()

    def run(self, op: Callable[..., Any], *args: Any, write: bool = False) -> Any:
        """``op(*args)``'s result, or an ``Outcome``; never raises a ``BackendError``."""
        if not self.breaker.allow():
            return FAILED
        try:
            result = op(*args)
        except ValueTooLarge as exc:
            self.too_large(exc)
            return REFUSED
        except StoreRefused as exc:
            self.refused(exc)
            return REFUSED
        except BackendError as exc:
            self.failed(exc)
            return FAILED
        self.ok(write)
        return result

    # -- bookkeeping ---------------------------------------------------------------------------
    def ok(self, write: bool = False) -> None:
        """An operation succeeded: ends a failing-backend incident (and, for a write, a
        refusing-store one); tells the breaker, which resets its consecutive failures."""
        if self.breaker.failures:
            self.breaker.success()
        if self.down:
            with self._lock:
                was, self.down = self.down, False
            if was:
                self.rec.add(reconnects=1)
                log.info("expcache: %s: cache backend is back", self.name)
        if write and self.refusing:
            with self._lock:
                was, self.refusing = self.refusing, False
            if was:
                log.info("expcache: %s: the cache stores results again", self.name)

    def failed(self, exc: BackendError) -> None:
        self.breaker.failure()
        if isinstance(exc, BackendTimeout):
            self.rec.add(timeouts=1)
        else:
            self.rec.add(errors=1)
        with self._lock:
            first, self.down = not self.down, True
        if first and self._loud("down"):
            log.warning(
                "expcache: %s: cache backend failed (%s); computing without it until it "
                "recovers",
                self.name,
                exc,
            )
        else:
            log.debug("expcache: %s: cache backend failing: %s", self.name, exc)

    def refused(self, exc: BackendError) -> None:
        self.rec.add(errors=1)
        with self._lock:
            first, self.refusing = not self.refusing, True
        if first and self._loud("refused"):
            log.warning(
                "expcache: %s: result not cached: %s (further refusals are counted in "
                "stats.errors until a store succeeds again)",
                self.name,
                exc,
            )
        else:
            log.debug("expcache: %s: result not cached: %s", self.name, exc)

    def _loud(self, kind: str) -> bool:
        """Whether a new incident of ``kind`` is worth a WARNING (not one a minute ago)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < _QUIET:
                return False
            self._last[kind] = now
            return True

    def too_large(self, exc: Exception) -> None:
        self.rec.add(too_large=1)
        self.warn_once("large", "expcache: %s: result not cached (stats.too_large): %s", exc)

    def unstorable(self, exc: Exception) -> None:
        self.rec.add(errors=1)
        self.warn_once(
            "unstorable", "expcache: %s: result cannot be serialised, not cached: %r", exc
        )

    def corrupt(self, exc: Exception) -> None:
        self.rec.add(corrupt=1)
        self.warn_once(
            "corrupt",
            "expcache: %s: ignoring a bad cache entry (%s); further ones are counted in "
            "stats.corrupt and logged at DEBUG",
            exc,
        )

    def warn_once(self, kind: str, msg: str, *args: Any) -> None:
        """WARNING the first time per kind and memoized function, DEBUG afterwards.

        ``msg``'s first ``%s`` is the function's name.
        """
        with self._lock:
            first = kind not in self._warned
            self._warned.add(kind)
        log.log(logging.WARNING if first else logging.DEBUG, msg, self.name, *args)
