"""The backend protocol: a byte store with the few atomic primitives the memoizer needs.

Backends know nothing of keys, values or policies: they move bytes under ``str`` keys and
map their dependency's failures onto ``BackendError`` subclasses. Everything else (envelopes,
statistics, fallbacks) lives above them, so one contract test suite covers every backend.

``gets``/``cas`` follow memcached: ``gets`` returns the value with an opaque token, ``cas``
stores only if the entry is unchanged since, and returns ``True`` (stored), ``False``
(changed meanwhile) or ``None`` (gone meanwhile). ``add`` stores only if absent.

Reads may return ``bytes`` or ``bytearray``: a large value is assembled in one preallocated
buffer, and copying it into an immutable ``bytes`` would cost as much as reading it (the
envelope only needs the buffer protocol, and pickle's out-of-band buffers can then point into
it without a further copy).

Every backend owns a ``CircuitBreaker``, shared by all memoized functions using it, so a dead
or hung server costs a few failed operations per cool-down, not one per call.

Failures a backend raises, and what the memoizer makes of them: ``BackendTimeout`` and
``BackendUnavailable`` (and plain ``BackendError``) count towards the breaker; ``ValueTooLarge``
and ``StoreRefused`` come from a store that answered, so they are counted but leave the
breaker closed. Nothing else may escape a primitive: backends map every exception of their
dependency, expected or not, onto ``BackendError``.

The administrative side (``iter_keys``, ``delete_many``, ``clear(prefix)``, ``server_stats``,
``probe``) serves ``cache_clear()`` of one function and the ``expcache cache`` commands: a
clear of one function or namespace must never wipe other people's entries on a shared store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeAlias

from .. import _validate as v
from ..errors import BackendError, StoreRefused, ValueTooLarge

__all__ = ["PROBE_KEY", "Backend", "CircuitBreaker", "Data", "Scope", "StoreRefused"]

Scope = Literal["process", "host", "network"]

#: What reads return: ``bytes``, or at run time a ``bytearray`` for a large value received in
#: one preallocated buffer (memcached). Declared ``bytes`` while callers on main are typed for
#: ``bytes`` (mypy's strict bytes would reject a ``bytearray`` they handle fine at run time);
#: change it to ``bytes | bytearray`` once memoize and serde accept that, and mypy will list
#: any caller that truly needs ``bytes``.
Data: TypeAlias = bytes

#: The key ``probe()`` looks up: harmless (never written), a valid token on every backend.
PROBE_KEY = "expcache-probe"


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
        self.threshold: int = v.integer("breaker_threshold", threshold, ge=1)
        self.cooldown: float = v.number("breaker_cooldown", cooldown, ge=0, unit="seconds")
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
    chunks); larger values raise ``ValueTooLarge``. ``scope`` says who else sees the entries:
    only this process, every process of this host, or every host that reaches the store; it
    decides whether stampede leases are worth a round trip and whether a launcher that spans
    hosts can share results. ``shared`` is ``scope != "process"``.
    """

    name: ClassVar[str] = "base"
    scope: ClassVar[Scope] = "network"

    def __init__(self, *, breaker_threshold: int = 3, breaker_cooldown: float = 5.0) -> None:
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self.max_value_size: int | None = None

    @property
    def shared(self) -> bool:
        """Whether other processes see the entries (kept for callers older than ``scope``)."""
        return self.scope != "process"

    def check_size(self, value: bytes) -> None:
        """Refuse a value above ``max_value_size`` before any I/O."""
        if self.max_value_size is not None and len(value) > self.max_value_size:
            raise ValueTooLarge(
                f"{self.name}: value of {len(value)} bytes exceeds "
                f"max_value_size={self.max_value_size}"
            )

    # -- primitives ------------------------------------------------------------------------
    def get(self, key: str) -> Data | None:
        raise NotImplementedError

    def get_many(self, keys: Sequence[str]) -> dict[str, Data]:
        out: dict[str, Data] = {}
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

    def gets(self, key: str) -> tuple[Data | None, Any]:
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

    # -- administration --------------------------------------------------------------------
    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete ``keys``; return how many of them were present.

        The fallback asks before each delete (two operations per key, and racy: a key written
        in between counts as absent); backends override it with one round trip per batch.
        """
        present = 0
        for key in keys:
            if self.get(key) is not None:
                present += 1
            self.delete(key)
        return present

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Every live key starting with ``prefix``, in no particular order.

        Auxiliary keys (chunks, leases, manifests) are listed too: they share the entry's
        prefix, so a prefix clear removes them with it.
        """
        raise BackendError(f"{self.name}: this backend cannot enumerate its keys")

    def clear(self, prefix: str | None = None) -> int:
        """Remove every entry (``prefix=None``), or those whose key starts with ``prefix``.

        Returns how many entries were removed (for ``prefix=None`` on memcached: how many the
        servers held just before, as they do not count what they flush). A prefix clear
        enumerates and deletes: it is not atomic, see each backend for what a concurrent
        reader sees.
        """
        if prefix is None:
            raise NotImplementedError
        return self.delete_many(sorted(self.iter_keys(prefix), key=_aux_last))

    def server_stats(self) -> dict[str, Any]:
        """What the store itself reports: at least ``items`` and ``bytes`` where it knows them."""
        return {"backend": self.name}

    def probe(self) -> list[tuple[str, str]]:
        """One harmless lookup per node: ``[(where, why)]`` of the nodes that failed.

        Never raises: the app calls it at start to decide between a warning, an error
        (``strict``) and an uncached run, and a probe that raised would decide for it.
        """
        try:
            self.get(PROBE_KEY)
        except Exception as exc:  # BackendError, or a subclass's bug: both mean "not usable"
            return [(self.where, str(exc) or repr(exc))]
        return []

    @property
    def where(self) -> str:
        """Where the store is, for messages (an address list, a directory, a name)."""
        return self.name

    def close(self) -> None:
        """Drop connections; the next operation reopens them."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``cache_stats.json``."""
        return {"backend": self.name}

    def __repr__(self) -> str:
        details = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "backend")
        return f"{type(self).__name__}({details})"


def _aux_last(key: str) -> tuple[int, str]:
    """Sort entries before their auxiliary keys (``<key>:c<i>:<nonce>``, ``<key>:lease``).

    Deleting an entry first makes a concurrent reader miss at once; deleting a chunk first
    would make it fetch a manifest, then miss anyway.
    """
    return key.count(":"), key
