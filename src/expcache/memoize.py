"""The memoizer: one object per cached function, over any ``Backend``.

One call, as data::

    hit:    key -> get -> verify envelope -> unpickle -> return          (one round trip)
    miss:   key -> get (nothing) -> [lease] -> run, time it -> set -> [release] -> return
    repeat: key -> gets -> [done? return mean] -> run -> fold sample -> add/cas (retry) -> mean

The backend may fail anywhere: every operation is guarded, failures are counted on the
function's ``stats``, the backend's circuit breaker is told, and the function's own value is
returned. Nothing from the cache ever reaches the caller unverified. A call stops using the
backend at its first failed operation, so a hung server costs at most one timeout per call,
and the breaker bounds how many calls pay even that.

Stampede protection ("one computation per cold key"): on a miss of a shared backend the
caller ``add``s ``<key>:lease``; the winner computes (a process-wide renewer thread keeps the
lease alive with ``touch``) while the others poll for the value with backoff. A winner that
dies stops renewing, the lease expires after ``lease_ttl`` and a waiter takes over. A winner
that decides not to store (too fast, too large) marks the lease ``unstored`` so the waiters
compute themselves at once instead of queueing; one that stored marks it ``stored`` (rather
than deleting it) so that a worker whose lookup just missed finds the lease taken and then
the value, instead of winning a fresh lease and computing a second time.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Generic, Literal, ParamSpec, TypeVar, cast, overload

from . import lease as _lease
from .backends.base import Backend, StoreRefused
from .backends.disk import DiskBackend
from .backends.null import NullBackend
from .entries import Entry, Meta, MomentsEntry, ValueEntry
from .errors import BackendError, BackendTimeout, ConfigError, SerdeError, ValueTooLarge
from .keys import KeyMaker
from .policy import Moments, RepetitionPolicy
from .serde import Serde, signing_key_from_env
from .stats import CacheStats

__all__ = ["Memoized", "memoize"]

log = logging.getLogger("expcache")

P = ParamSpec("P")
R = TypeVar("R")

_FAIL: Final = object()  # the backend failed (or the breaker is open): leave it alone this call
_REFUSED: Final = object()  # the backend is fine but did not store the value
_OWNED: Final = object()  # _wait: we took over the lease
_COMPUTE: Final = object()  # _wait: compute and store without a lease
_NOTHING: Final = object()
_UNSTORED: Final = b"unstored"  # lease marker: the holder computed but will not store
_STORED: Final = b"stored"  # lease marker: the holder stored the value (look again)
# "auto" stores results that took longer than two lookups: a hit then saves at least one
# lookup's worth. (4 left sub-millisecond utilities -- e.g. pyDVL's single-class subsets --
# unstored whenever memcached's moving round-trip estimate spiked.)
_AUTO_FACTOR: Final = 2.0
_DETERMINISTIC: Final = "v"
_MOMENTS: Final = "m"
# Per-process state rebuilt by _setup(); everything else in __dict__ travels with a pickle.
_RUNTIME: Final = frozenset(
    {"stats", "_keys", "_off", "_auto", "_lock", "_degraded", "_warned", "_lookup_seconds",
     "_lookups"}
)


def _import_global(module: str, qualname: str) -> Any:
    obj: Any = __import__(module, fromlist=["_"])
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _value_entry(value: Any, elapsed: float) -> ValueEntry:
    return ValueEntry(value, Meta(created=time.time(), seconds=elapsed))


def _as_tuple(entry: Entry) -> tuple[Any, ...]:
    """The typed entry in the positional layout the call paths below still read."""
    if type(entry) is MomentsEntry:
        m = entry.moments
        return (_MOMENTS, m.n, m.mean, m.m2, entry.meta.seconds)
    return (_DETERMINISTIC, entry[0], entry.meta.seconds)


class Memoized(Generic[P, R]):
    """A callable that answers repeated calls from a cache backend.

    Introspection in the style of ``functools.lru_cache``/joblib: ``stats`` (a ``CacheStats``),
    ``cache_key(*args, **kwargs)``, ``check_call_in_cache(*args, **kwargs)``, ``cache_info()``,
    ``cache_clear()``, ``__wrapped__``. Picklable when the function and backend are; the copy
    reconnects lazily in the other process and its ``stats`` start at zero. A memoized
    function bound at module level under its own name (``@memoize`` on a ``def``) pickles by
    reference, like ``functools.lru_cache`` wrappers.
    """

    __wrapped__: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        backend: Backend,
        *,
        time_threshold: float | Literal["auto"] = 0.0,
        repeat: RepetitionPolicy | None = None,
        ignore_args: Iterable[str] = (),
        signature: bytes | None = None,
        version: str | None = None,
        namespace: str = "",
        pickle_args: bool = False,
        signing_key: bytes | str | None = None,
        lease: bool = True,
        lease_ttl: float = 10.0,
        lease_max_wait: float = 600.0,
        max_cas_retries: int = 200,
        expire: float = 0,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"memoize needs a callable, got {type(fn).__name__}")
        if not isinstance(backend, Backend):
            raise ConfigError(
                f"backend={backend!r}: expected an expcache.backends.Backend instance"
            )
        if time_threshold != "auto" and (
            isinstance(time_threshold, bool)
            or not isinstance(time_threshold, (int, float))
            or time_threshold < 0
        ):
            raise ConfigError(
                f"time_threshold={time_threshold!r}: must be a number of seconds >= 0 or 'auto'"
            )
        if repeat is not None and not isinstance(repeat, RepetitionPolicy):
            raise ConfigError(f"repeat={repeat!r}: expected a RepetitionPolicy or None")
        for label, number in (("lease_ttl", lease_ttl), ("lease_max_wait", lease_max_wait)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                raise ConfigError(f"{label}={number!r}: must be a number of seconds > 0")
        if isinstance(max_cas_retries, bool) or not isinstance(max_cas_retries, int) or (
            max_cas_retries < 1
        ):
            raise ConfigError(f"max_cas_retries={max_cas_retries!r}: must be an integer >= 1")
        if isinstance(expire, bool) or not isinstance(expire, (int, float)) or expire < 0:
            raise ConfigError(f"expire={expire!r}: must be seconds >= 0 (0 = never expire)")
        # A callable object's __dict__ (a pyDVL Utility's data, model...) is not ours to copy.
        updated = functools.WRAPPER_UPDATES if inspect.isfunction(fn) else ()
        functools.update_wrapper(self, fn, updated=updated)
        if name is not None:
            self.__name__ = name
        self.fn = fn
        self.backend = backend
        self.time_threshold = time_threshold
        self.repeat = repeat
        self.ignore_args = tuple(ignore_args)
        self.signature = signature
        self.version = version
        self.namespace = namespace
        self.pickle_args = pickle_args
        self.serde = Serde(signing_key if signing_key is not None else signing_key_from_env())
        self.lease = lease
        self.lease_ttl = lease_ttl
        self.lease_max_wait = lease_max_wait
        self.max_cas_retries = max_cas_retries
        self.expire = expire
        self.config: Any = backend.describe()
        self.stats = CacheStats()
        self._setup()

    def _setup(self) -> None:
        # Running moments and plain values of one call live under different keys, so that
        # two policies sweeping one namespace never overwrite each other's entries.
        version = self.version
        if self.repeat is not None:
            version = "repeated" if version is None else f"{version}|repeated"
        self._keys = KeyMaker(
            self.fn,
            ignore_args=self.ignore_args,
            signature=self.signature,
            version=version,
            namespace=self.namespace,
            pickle_fallback=self.pickle_args,
        )
        self._off = isinstance(self.backend, NullBackend)
        self._auto = self.time_threshold == "auto"
        self._lock = threading.Lock()
        self._degraded = False
        self._warned: set[str] = set()
        self._lookup_seconds = 0.0  # running estimate of one lookup's cost (for "auto")
        self._lookups = 0

    # -- pickling ------------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> Any:
        fn = self.fn
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        if module in sys.modules and "<" not in qualname:
            try:
                found = _import_global(module, qualname)
            except (AttributeError, ImportError):
                found = None
            if found is self:  # decorated in place: the module attribute *is* this object
                return _import_global, (module, qualname)
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stats = CacheStats()
        self._setup()

    # -- introspection -------------------------------------------------------------------------
    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key this call is stored under."""
        return self._keys(args, kwargs)

    def check_call_in_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether this call would be answered without running the function.

        Read-only: it neither counts in ``stats`` nor informs the circuit breaker.
        """
        entry = self._peek(args, kwargs)
        if entry is None:
            return False
        if entry[0] == _MOMENTS:
            return self.repeat is not None and self.repeat.done(Moments(*entry[1:4]))
        return entry[0] == _DETERMINISTIC and self.repeat is None

    def moments(self, *args: P.args, **kwargs: P.kwargs) -> Moments | None:
        """The stored running moments of this call (stochastic functions), or None.

        Read-only like ``check_call_in_cache``: for inspecting how a mean and its standard
        error settle (``m.n``, ``m.mean``, ``m.stderr``) without evaluating anything.
        """
        if self.repeat is None:
            return None
        entry = self._peek(args, kwargs)
        if entry is not None and entry[0] == _MOMENTS:
            return Moments(*entry[1:4])
        return None

    def _peek(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The decoded entry of a call, read-only: no stats, no breaker bookkeeping."""
        if self._off or not self.backend.breaker.allow():
            return None
        key = self._keys(args, kwargs)
        try:
            data = self.backend.get(key)
            entry = None if data is None else _as_tuple(self.serde.loads(key, data))
        except (BackendError, SerdeError):
            return None
        return entry if type(entry) is tuple and entry else None

    def cache_info(self) -> CacheStats:
        return self.stats.copy()

    def cache_clear(self) -> None:
        """Empty the whole backend (all functions sharing it) and reset ``stats``.

        Unlike a call, this raises ``BackendError`` when the backend cannot be reached: a
        clear that silently did nothing would leave stale entries behind.
        """
        self.backend.clear()
        self.stats.reset()

    def __repr__(self) -> str:
        return f"<Memoized {self.__name__} on {self.backend!r}>"

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._off:
            return cast(R, self._compute(args, kwargs))
        started = time.perf_counter() if self._auto else 0.0
        key = self._keys(args, kwargs)
        if self.repeat is not None:
            return cast(R, self._repeated(key, args, kwargs))
        backend = self.backend
        if not backend.breaker.allow():
            with self._lock:
                self.stats.bypassed += 1
            return cast(R, self._compute(args, kwargs))
        try:
            data = backend.get(key)
        except BackendError as exc:
            self._failed(exc)
            return cast(R, self._compute(args, kwargs))
        if self._degraded or backend.breaker.failures:
            self._recovered()
        if self._auto:
            self._note_lookup(time.perf_counter() - started)
        if data is not None:
            entry = self._decode(key, data)
            if entry is not None and entry[0] == _DETERMINISTIC:
                with self._lock:
                    self.stats.hits += 1
                    self.stats.saved_seconds += entry[2]
                return cast(R, entry[1])
        return cast(R, self._miss(key, args, kwargs, data))

    def _run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        value = self.fn(*args, **kwargs)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.stats.compute_seconds += elapsed
        return value, elapsed

    def _compute(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """Run without the cache (off, bypassed or failed): a miss that stores nothing."""
        value, _ = self._run(args, kwargs)
        with self._lock:
            self.stats.misses += 1
        return value

    def _note_lookup(self, seconds: float) -> None:
        # The first lookup pays for connecting (or creating the disk cache): it stands in
        # only until a second one replaces it; after that, a moving average.
        self._lookups += 1
        if self._lookups <= 2:
            self._lookup_seconds = seconds
        else:
            self._lookup_seconds = 0.9 * self._lookup_seconds + 0.1 * seconds

    # -- deterministic miss ----------------------------------------------------------------------
    def _miss(
        self, key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], seen: bytes | None
    ) -> Any:
        lease_key = f"{key}:lease"
        owned = False
        store = True
        if self.lease and self.backend.shared:
            token = os.urandom(8).hex().encode()
            got = self._guarded(self.backend.add, lease_key, token, self.lease_ttl)
            if got is True:
                owned = True
            elif got is False:
                outcome = self._wait(key, lease_key, token, seen)
                if type(outcome) is tuple:
                    return outcome[0]
                owned = outcome is _OWNED
                store = outcome is not _FAIL
            else:
                store = got is not _FAIL
        handle = _lease.renewer.hold(self.backend, lease_key, self.lease_ttl) if owned else 0
        try:
            value, elapsed = self._run(args, kwargs)
        except BaseException:
            if owned:
                _lease.renewer.release(handle)
                self._guarded(self.backend.delete, lease_key)
            raise
        with self._lock:
            self.stats.misses += 1
        stored = self._store(key, value, elapsed) if store else _FAIL
        if owned:
            _lease.renewer.release(handle)
            # Not a delete: a worker that missed just before our store and asks for the lease
            # just after must find it taken (and then our value), or it would compute again.
            if stored is True:  # the marker only has to outlive that race: 2 s (memcached's
                # clock ticks once a second, so a TTL of 1 may end at the next tick)
                self._guarded(self.backend.set, lease_key, _STORED, 2)
            elif stored is not _FAIL:
                self._guarded(self.backend.set, lease_key, _UNSTORED, self.lease_ttl)
        return value

    def _wait(self, key: str, lease_key: str, token: bytes, seen: bytes | None) -> Any:
        """Wait for the lease holder's value. Returns ``(value,)``, ``_OWNED`` (the lease
        expired and we took it over), ``_COMPUTE`` (compute and store: the holder will not
        store, or we waited ``lease_max_wait``) or ``_FAIL`` (the backend failed)."""
        deadline = time.monotonic() + self.lease_max_wait
        delay = 0.002
        waited = False
        while True:
            # The lease first: the holder stores the value before it marks the lease, so a
            # lease read as "stored" guarantees the value is visible to the read after it.
            found = self._guarded(self.backend.get_many, [lease_key, key])
            if found is _FAIL or found is _REFUSED:
                return _FAIL
            data = found.get(key)
            if data is not None:
                entry = self._decode(key, data, count=data != seen)  # count a bad entry once
                if entry is not None and entry[0] == _DETERMINISTIC:
                    with self._lock:
                        self.stats.hits += 1
                        self.stats.saved_seconds += entry[2]
                    return (entry[1],)
            lease = found.get(lease_key)
            if lease in (_UNSTORED, _STORED):  # no value is coming (or it is gone)
                return _COMPUTE
            if lease is None:  # released without a value, or expired: take it over
                got = self._guarded(self.backend.add, lease_key, token, self.lease_ttl)
                if got is True:
                    return _OWNED
                if got is not False:
                    return _FAIL if got is _FAIL else _COMPUTE
                continue  # another waiter won the race; look again
            if time.monotonic() >= deadline:
                return _COMPUTE
            if not waited:
                waited = True
                with self._lock:
                    self.stats.lease_waits += 1
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.25)

    def _threshold(self) -> float:
        """Seconds a result must have taken to be stored (``auto``: relative to a lookup)."""
        if self._auto:
            return _AUTO_FACTOR * self._lookup_seconds
        return float(cast(float, self.time_threshold))

    def _store(self, key: str, value: Any, elapsed: float) -> Any:
        """``True`` stored, ``False`` deliberately not stored, ``_FAIL`` the backend failed."""
        if elapsed < self._threshold():
            with self._lock:
                self.stats.below_threshold += 1
            return False
        try:
            data = self.serde.dumps(key, _value_entry(value, elapsed))
        except Exception as exc:  # an unpicklable result is returned, just not stored
            self._not_storable(exc)
            return False
        got = self._guarded(self.backend.set, key, data, self.expire)
        if got is _FAIL:
            return _FAIL
        if got is _REFUSED:
            return False
        with self._lock:
            self.stats.sets += 1
        return True

    # -- stochastic ------------------------------------------------------------------------------
    def _repeated(self, key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        policy = cast(RepetitionPolicy, self.repeat)
        backend = self.backend
        if not backend.breaker.allow():
            with self._lock:
                self.stats.bypassed += 1
            return Moments.of(self._compute(args, kwargs)).mean
        value: Any = _NOTHING
        elapsed = 0.0
        moments: Moments | None = None
        new: Moments | None = None
        for attempt in range(self.max_cas_retries):
            got = self._call(backend.gets, key)
            if got is _FAIL or got is _REFUSED:
                break
            data, token = got
            moments, stored_elapsed = self._moments(key, data)
            if value is _NOTHING:
                if moments is not None and policy.done(moments):
                    with self._lock:
                        self.stats.hits += 1
                        self.stats.saved_seconds += stored_elapsed
                    return moments.mean
                value, elapsed = self._run(args, kwargs)
                with self._lock:
                    if moments is None:
                        self.stats.misses += 1
                    else:
                        self.stats.repeats += 1
            new = Moments.of(value) if moments is None else moments.add(value)
            try:
                payload = self.serde.dumps(
                    key, MomentsEntry(new, Meta(created=time.time(), seconds=elapsed))
                )
            except Exception as exc:
                self._not_storable(exc)
                return new.mean
            if data is None:
                ok = self._call(backend.add, key, payload, self.expire)
            else:
                ok = self._call(backend.cas, key, payload, token, self.expire)
            if ok is _FAIL or ok is _REFUSED:
                return new.mean
            if ok:
                with self._lock:
                    self.stats.sets += 1
                return new.mean
            # Another worker changed the entry since our read: fold into its state instead.
            time.sleep(random.random() * 0.0005 * min(attempt + 1, 20))
        else:
            with self._lock:
                self.stats.conflicts += 1
            self._warn_once(
                "conflict",
                "expcache: %s: gave up updating the running moments of %s after %d "
                "conflicting updates; the evaluation is returned but not recorded "
                "(counted in stats.conflicts)",
                self.__name__, key, self.max_cas_retries,
            )
            return cast(Moments, new).mean
        if value is _NOTHING:
            value = self._compute(args, kwargs)
        return (Moments.of(value) if moments is None else moments.add(value)).mean

    def _moments(self, key: str, data: bytes | None) -> tuple[Moments | None, float]:
        if data is None:
            return None, 0.0
        entry = self._decode(key, data)
        if entry is None or entry[0] != _MOMENTS:
            return None, 0.0
        return Moments(*entry[1:4]), float(entry[4])

    # -- failure handling ------------------------------------------------------------------------
    def _decode(self, key: str, data: bytes, count: bool = True) -> Any:
        try:
            entry = _as_tuple(self.serde.loads(key, data))
            if not isinstance(entry, tuple) or not entry or entry[0] not in (
                _DETERMINISTIC, _MOMENTS
            ):
                raise SerdeError(f"entry under {key!r} has an unknown layout")
            return entry
        except SerdeError as exc:
            if not count:
                return None
            with self._lock:
                self.stats.corrupt += 1
            self._warn_once(
                "corrupt",
                "expcache: %s: ignoring a bad cache entry (%s); further ones are counted in "
                "stats.corrupt and logged at DEBUG", self.__name__, exc,
            )
            return None

    def _guarded(self, op: Callable[..., Any], *args: Any) -> Any:
        """``_call`` if the breaker lets us through, else ``_FAIL`` without any I/O."""
        if not self.backend.breaker.allow():
            return _FAIL
        return self._call(op, *args)

    def _call(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run one backend operation: its result, ``_REFUSED`` (counted; the server answered
        but did not store) or ``_FAIL`` (counted; the backend is failing)."""
        try:
            result = op(*args)
        except ValueTooLarge as exc:
            self._too_large(exc)
            return _REFUSED
        except StoreRefused as exc:
            self._alive()
            with self._lock:
                self.stats.errors += 1
            self._warn_once("refused", "expcache: %s: result not cached: %s", self.__name__, exc)
            return _REFUSED
        except BackendError as exc:
            self._failed(exc)
            return _FAIL
        self._alive()
        return result

    def _alive(self) -> None:
        if self._degraded or self.backend.breaker.failures:
            self._recovered()

    def _failed(self, exc: BackendError) -> None:
        self.backend.breaker.failure()
        with self._lock:
            if isinstance(exc, BackendTimeout):
                self.stats.timeouts += 1
            else:
                self.stats.errors += 1
            first = not self._degraded
            self._degraded = True
        if first:
            log.warning(
                "expcache: %s: cache backend failed (%s); computing without it until it "
                "recovers", self.__name__, exc,
            )

    def _recovered(self) -> None:
        self.backend.breaker.success()
        with self._lock:
            was = self._degraded
            self._degraded = False
            if was:
                self.stats.reconnects += 1
        if was:
            log.warning("expcache: %s: cache backend is back", self.__name__)

    def _too_large(self, exc: Exception) -> None:
        with self._lock:
            self.stats.too_large += 1
        self._warn_once(
            "large", "expcache: %s: result not cached (counted in stats.too_large): %s",
            self.__name__, exc,
        )

    def _not_storable(self, exc: Exception) -> None:
        with self._lock:
            self.stats.errors += 1
        self._warn_once(
            "unstorable", "expcache: %s: result cannot be serialised, not cached: %r",
            self.__name__, exc,
        )

    def _warn_once(self, kind: str, msg: str, *args: Any) -> None:
        """WARNING the first time per kind and memoized function, DEBUG afterwards."""
        with self._lock:
            first = kind not in self._warned
            self._warned.add(kind)
        log.log(logging.WARNING if first else logging.DEBUG, msg, *args)

    # -- batched evaluation ----------------------------------------------------------------------
    def map(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]], *, n_jobs: int = 1
    ) -> list[R]:
        """Evaluate many calls with one ``get_many`` and one ``set_many``.

        Each item is a tuple of positional arguments or a mapping of keyword arguments.
        Misses are computed in order, or with joblib when ``n_jobs != 1``. Stochastic
        functions fall back to one call each (their updates must be atomic per key).
        """
        items = [
            (c, {}) if type(c) is tuple
            else ((), dict(c)) if isinstance(c, Mapping)
            else (tuple(c), {})
            for c in calls
        ]
        if self._off or self.repeat is not None:
            return [self(*a, **k) for a, k in items]
        make_key = self._keys
        keys = [make_key(a, k) for a, k in items]
        usable = self.backend.breaker.allow()
        found: Any = {}
        if not usable:
            with self._lock:
                self.stats.bypassed += len(items)
        else:
            found = self._call(self.backend.get_many, list(dict.fromkeys(keys)))
            if found is _FAIL or found is _REFUSED:
                usable, found = False, {}
        results: dict[str, Any] = {}
        loads = self.serde.loads
        for key, data in found.items():
            try:  # inline: the all-hits batch is the case to make cheap
                entry = _as_tuple(loads(key, data))
            except SerdeError:
                entry = self._decode(key, data)  # counts and logs it
            if type(entry) is tuple and entry and entry[0] == _DETERMINISTIC:
                results[key] = entry
        if all(key in results for key in keys):
            with self._lock:
                self.stats.hits += len(keys)
                self.stats.saved_seconds += sum(results[key][2] for key in keys)
            return [cast(R, results[key][1]) for key in keys]
        todo: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        hits = 0
        saved = 0.0
        for key, call in zip(keys, items, strict=True):
            if key in results:
                hits += 1
                saved += results[key][2]
            else:
                todo.setdefault(key, call)
        computed = self._compute_many(todo, n_jobs)
        to_store: dict[str, bytes] = {}
        threshold = self._threshold()
        below = 0
        for key, (value, elapsed) in computed.items():
            results[key] = (_DETERMINISTIC, value, elapsed)
            if elapsed < threshold:
                below += 1
                continue
            try:
                to_store[key] = self.serde.dumps(key, _value_entry(value, elapsed))
            except Exception as exc:
                self._not_storable(exc)
        if to_store and usable and self._call(
            self.backend.set_many, to_store, self.expire
        ) not in (_FAIL, _REFUSED):
            with self._lock:
                self.stats.sets += len(to_store)
        with self._lock:
            # duplicates of a computed call within the batch are answered without running
            self.stats.hits += hits + (len(items) - hits - len(computed))
            self.stats.misses += len(computed)
            self.stats.saved_seconds += saved
            self.stats.below_threshold += below
        return [cast(R, results[key][1]) for key in keys]

    def _compute_many(
        self, todo: Mapping[str, tuple[tuple[Any, ...], dict[str, Any]]], n_jobs: int
    ) -> dict[str, tuple[Any, float]]:
        if n_jobs == 1 or len(todo) < 2:
            return {key: self._run(a, k) for key, (a, k) in todo.items()}
        from joblib import Parallel, delayed  # optional: only for parallel batches

        fn = self.fn
        outs = Parallel(n_jobs=n_jobs)(delayed(_timed)(fn, a, k) for a, k in todo.values())
        result = dict(zip(todo, outs, strict=True))
        with self._lock:
            self.stats.compute_seconds += sum(e for _, e in result.values())
        return result


def _timed(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


@overload
def memoize(fn: Callable[P, R], *, backend: Backend | None = None, **options: Any) -> Memoized[P, R]:
    ...


@overload
def memoize(
    fn: None = None, *, backend: Backend | None = None, **options: Any
) -> Callable[[Callable[P, R]], Memoized[P, R]]:
    ...


def memoize(
    fn: Callable[P, R] | None = None,
    *,
    backend: Backend | None = None,
    **options: Any,
) -> Memoized[P, R] | Callable[[Callable[P, R]], Memoized[P, R]]:
    """Memoize ``fn`` in ``backend`` (default: the embedded disk cache).

    Usable bare (``@memoize``) or with options (``@memoize(backend=..., time_threshold=...)``);
    the options are those of ``Memoized``.
    """

    def wrap(f: Callable[P, R]) -> Memoized[P, R]:
        return Memoized(f, backend if backend is not None else DiskBackend(), **options)

    return wrap if fn is None else wrap(fn)
