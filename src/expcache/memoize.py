"""The memoizer: one object per cached function, over any ``Backend``.

One call, as data::

    hit:    key -> get -> verify envelope -> unpickle -> return          (one round trip)
    miss:   key -> get (nothing) -> [lease] -> run, time it -> set -> [release] -> return
    repeat: key -> gets -> [done? return mean] -> run -> fold sample -> add/cas (retry) -> mean

The backend may fail anywhere: every operation is guarded, failures are counted on the
function's ``stats``, the backend's circuit breaker is told, and the function's own value is
returned. Nothing from the cache ever reaches the caller unverified.

Stampede protection ("one computation per cold key"): on a miss of a shared backend the
caller ``add``s ``<key>:lease``; the winner computes (a process-wide renewer thread keeps the
lease alive with ``touch``) while the others poll for the value with backoff. A winner that
dies stops renewing, the lease expires after ``lease_ttl`` and a waiter takes over. A winner
that decides not to store (too fast, too large) marks the lease ``unstored`` so the waiters
compute themselves at once instead of queueing.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Generic, Literal, ParamSpec, TypeVar, cast

from .backends.base import Backend
from .backends.disk import DiskBackend
from .backends.null import NullBackend
from .errors import BackendError, BackendTimeout, ConfigError, SerdeError, ValueTooLarge
from .keys import KeyMaker
from .policy import Moments, RepetitionPolicy
from .serde import Serde, signing_key_from_env
from .stats import CacheStats

__all__ = ["Memoized", "memoize"]

log = logging.getLogger("expcache")

P = ParamSpec("P")
R = TypeVar("R")

_FAIL: Final = object()  # a guarded backend operation failed or was skipped
_UNSTORED: Final = b"unstored"
_AUTO_FACTOR: Final = 4.0  # "auto" stores results that took > 4 lookups' time to compute
_DETERMINISTIC: Final = "v"
_MOMENTS: Final = "m"


class _LeaseRenewer:
    """One daemon thread per process that ``touch``es the leases being computed under."""

    def __init__(self) -> None:
        self._leases: dict[int, tuple[Backend, str, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next = 0

    def hold(self, backend: Backend, key: str, ttl: float) -> int:
        with self._lock:
            self._next += 1
            self._leases[self._next] = (backend, key, ttl)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="expcache-lease-renewer", daemon=True
                )
                self._thread.start()
            return self._next

    def release(self, handle: int) -> None:
        with self._lock:
            self._leases.pop(handle, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._leases:
                    self._thread = None
                    return
                period = min(ttl for _, _, ttl in self._leases.values()) / 3
                self._wake.wait(period)
                leases = list(self._leases.values())
            for backend, key, ttl in leases:
                try:
                    backend.touch(key, ttl)
                except BackendError:
                    pass  # the computation goes on; at worst another worker duplicates it


_renewer = _LeaseRenewer()


class Memoized(Generic[P, R]):
    """A callable that answers repeated calls from a cache backend.

    Introspection in the style of ``functools.lru_cache``/joblib: ``stats`` (a ``CacheStats``),
    ``cache_key(*args, **kwargs)``, ``check_call_in_cache(*args, **kwargs)``, ``cache_info()``,
    ``cache_clear()``, ``__wrapped__``. Picklable when the function and backend are; the copy
    reconnects lazily in the other process and its ``stats`` start at zero.
    """

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
        if not lease_ttl > 0:
            raise ConfigError(f"lease_ttl={lease_ttl!r}: must be > 0 seconds")
        if max_cas_retries < 1:
            raise ConfigError(f"max_cas_retries={max_cas_retries!r}: must be >= 1")
        functools.update_wrapper(self, fn)
        if name is not None:
            self.__name__ = self.__qualname__ = name
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
        self.stats = CacheStats()
        self.config: Any = backend.describe()
        self._setup()

    def _setup(self) -> None:
        self._keys = KeyMaker(
            self.fn,
            ignore_args=self.ignore_args,
            signature=self.signature,
            version=self.version,
            namespace=self.namespace,
            pickle_fallback=self.pickle_args,
        )
        self._off = isinstance(self.backend, NullBackend)
        self._lock = threading.Lock()
        self._degraded = False
        self._warned_large = False
        self._lookup_seconds = 0.0  # running estimate of one lookup's cost (for "auto")

    # -- pickling ------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["serde"] = self.serde.signing_key
        state.pop("stats", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.serde = Serde(state["serde"])
        self.stats = CacheStats()
        self._setup()

    # -- introspection -------------------------------------------------------------------------
    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key this call is stored under."""
        return self._keys(args, kwargs)

    def check_call_in_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether this call would be answered without running the function."""
        key = self._keys(args, kwargs)
        try:
            data = self.backend.get(key)
            if data is None:
                return False
            entry = self.serde.loads(key, data)
        except (BackendError, SerdeError):
            return False
        if entry[0] == _MOMENTS:
            return self.repeat is not None and self.repeat.done(Moments(*entry[1:4]))
        return True

    def cache_info(self) -> CacheStats:
        return self.stats.copy()

    def cache_clear(self) -> None:
        """Empty the whole backend (all functions sharing it) and reset ``stats``."""
        self.backend.clear()
        self.stats.reset()

    def __repr__(self) -> str:
        return f"<Memoized {self.__name__} on {self.backend!r}>"

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._off:
            return self._run_uncached(args, kwargs)
        key = self._keys(args, kwargs)
        if self.repeat is not None:
            return cast(R, self._repeated(key, args, kwargs))
        backend = self.backend
        if backend.breaker.allow():
            started = time.perf_counter()
            try:
                data = backend.get(key)
            except BackendError as exc:
                self._failed(exc)
            else:
                if self._degraded or backend.breaker.is_open:
                    self._recovered()
                self._lookup_seconds = 0.9 * self._lookup_seconds + 0.1 * (
                    time.perf_counter() - started
                )
                if data is not None:
                    entry = self._decode(key, data)
                    if entry is not None and entry[0] == _DETERMINISTIC:
                        with self._lock:
                            self.stats.hits += 1
                            self.stats.saved_seconds += entry[2]
                        return cast(R, entry[1])
                return self._miss(key, args, kwargs)
        else:
            with self._lock:
                self.stats.bypassed += 1
        value, elapsed = self._run(args, kwargs)
        with self._lock:
            self.stats.misses += 1
        return value

    def _run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, float]:
        started = time.perf_counter()
        value = self.fn(*args, **kwargs)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.stats.compute_seconds += elapsed
        return value, elapsed

    def _run_uncached(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
        value, _ = self._run(args, kwargs)
        with self._lock:
            self.stats.misses += 1
        return cast(R, value)

    # -- deterministic miss ----------------------------------------------------------------------
    def _miss(self, key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        lease_key = f"{key}:lease"
        owned = False
        if self.lease and self.backend.shared:
            token = os.urandom(8).hex().encode()
            got = self._guarded(self.backend.add, lease_key, token, self.lease_ttl)
            if got is False:
                outcome = self._wait(key, lease_key, token)
                if outcome is not _FAIL and outcome is not True:
                    return outcome[0]
                owned = outcome is True
            else:
                owned = got is True
        handle = _renewer.hold(self.backend, lease_key, self.lease_ttl) if owned else 0
        try:
            value, elapsed = self._run(args, kwargs)
        except BaseException:
            if owned:
                _renewer.release(handle)
                self._guarded(self.backend.delete, lease_key)
            raise
        with self._lock:
            self.stats.misses += 1
        stored = self._store(key, value, elapsed)
        if owned:
            _renewer.release(handle)
            if stored:
                self._guarded(self.backend.delete, lease_key)
            else:
                self._guarded(self.backend.set, lease_key, _UNSTORED, self.lease_ttl)
        return value

    def _wait(self, key: str, lease_key: str, token: bytes) -> Any:
        """Wait for another worker's value: ``(value,)``, ``True`` (we own the lease now),
        or ``_FAIL`` (compute without a lease)."""
        with self._lock:
            self.stats.lease_waits += 1
        deadline = time.monotonic() + self.lease_max_wait
        delay = 0.002
        while time.monotonic() < deadline:
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.25)
            found = self._guarded(self.backend.get_many, [key, lease_key])
            if found is _FAIL:
                return _FAIL
            if key in found:
                entry = self._decode(key, found[key])
                if entry is not None and entry[0] == _DETERMINISTIC:
                    with self._lock:
                        self.stats.hits += 1
                        self.stats.saved_seconds += entry[2]
                    return (entry[1],)
            lease = found.get(lease_key)
            if lease == _UNSTORED:
                return _FAIL
            if lease is None:
                got = self._guarded(self.backend.add, lease_key, token, self.lease_ttl)
                if got is not False:
                    return True if got is True else _FAIL
        return _FAIL

    def _store(self, key: str, value: Any, elapsed: float) -> bool:
        threshold = self.time_threshold
        if threshold == "auto":
            threshold = _AUTO_FACTOR * self._lookup_seconds
        if elapsed < threshold:
            with self._lock:
                self.stats.below_threshold += 1
            return False
        try:
            data = self.serde.dumps(key, (_DETERMINISTIC, value, elapsed))
        except Exception as exc:  # an unpicklable result is returned, just not stored
            self._not_storable(exc)
            return False
        if self._guarded(self.backend.set, key, data, self.expire) is _FAIL:
            return False
        with self._lock:
            self.stats.sets += 1
        return True

    # -- stochastic ------------------------------------------------------------------------------
    def _repeated(self, key: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        policy = cast(RepetitionPolicy, self.repeat)
        value: Any = _FAIL
        elapsed = 0.0
        moments: Moments | None = None
        for attempt in range(self.max_cas_retries):
            got = self._guarded(self.backend.gets, key)
            if got is _FAIL:
                break
            data, token = got
            moments = None
            if data is not None:
                entry = self._decode(key, data)
                if entry is not None and entry[0] == _MOMENTS:
                    moments = Moments(*entry[1:4])
            if value is _FAIL:
                if moments is not None and policy.done(moments):
                    with self._lock:
                        self.stats.hits += 1
                    return moments.mean
                value, elapsed = self._run(args, kwargs)
                with self._lock:
                    if moments is None:
                        self.stats.misses += 1
                    else:
                        self.stats.repeats += 1
            new = Moments.of(value) if moments is None else moments.add(value)
            try:
                payload = self.serde.dumps(key, (_MOMENTS, new.n, new.mean, new.m2, elapsed))
            except Exception as exc:
                self._not_storable(exc)
                return new.mean
            if data is None:
                ok = self._guarded(self.backend.add, key, payload, self.expire)
            else:
                ok = self._guarded(self.backend.cas, key, payload, token, self.expire)
            if ok is _FAIL:
                break
            if ok:
                with self._lock:
                    self.stats.sets += 1
                return new.mean
            # Another worker updated the entry since our read: fold into its state instead.
            time.sleep(random.random() * 0.0005 * min(attempt + 1, 20))
        else:
            with self._lock:
                self.stats.conflicts += 1
            log.warning(
                "expcache: %s: gave up updating the running moments of %s after %d conflicts",
                self.__name__, key, self.max_cas_retries,
            )
        if value is _FAIL:
            value, _ = self._run(args, kwargs)
            with self._lock:
                self.stats.misses += 1
        return (Moments.of(value) if moments is None else moments.add(value)).mean

    # -- failure handling ------------------------------------------------------------------------
    def _decode(self, key: str, data: bytes) -> Any:
        try:
            entry = self.serde.loads(key, data)
            if not isinstance(entry, tuple) or entry[0] not in (_DETERMINISTIC, _MOMENTS):
                raise SerdeError(f"entry under {key!r} has an unknown layout")
            return entry
        except SerdeError as exc:
            with self._lock:
                self.stats.corrupt += 1
            log.warning("expcache: %s: ignoring a bad cache entry: %s", self.__name__, exc)
            return None

    def _guarded(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run one backend operation; ``_FAIL`` (counted) instead of raising."""
        breaker = self.backend.breaker
        if not breaker.allow():
            return _FAIL
        try:
            result = op(*args)
        except ValueTooLarge as exc:
            breaker.success()
            self._too_large(exc)
            return _FAIL
        except BackendError as exc:
            self._failed(exc)
            return _FAIL
        if self._degraded or breaker.is_open:
            self._recovered()
        return result

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
            first = not self._warned_large
            self._warned_large = True
        if first:
            log.warning("expcache: %s: result not cached: %s", self.__name__, exc)

    def _not_storable(self, exc: Exception) -> None:
        with self._lock:
            self.stats.errors += 1
        log.warning("expcache: %s: result cannot be serialised, not cached: %r",
                    self.__name__, exc)

    # -- batched evaluation ----------------------------------------------------------------------
    def map(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]], *, n_jobs: int = 1
    ) -> list[R]:
        """Evaluate many calls with one ``get_many`` and one ``set_many``.

        Each item is a tuple of positional arguments or a mapping of keyword arguments.
        Misses are computed in order, or with joblib when ``n_jobs != 1``. Stochastic
        functions fall back to one call each (their updates must be atomic per key).
        """
        items = [((), dict(c)) if isinstance(c, Mapping) else (tuple(c), {}) for c in calls]
        if self._off or self.repeat is not None:
            return [self(*a, **k) for a, k in items]
        keys = [self._keys(a, k) for a, k in items]
        found = self._guarded(self.backend.get_many, list(dict.fromkeys(keys)))
        if found is _FAIL:
            with self._lock:
                self.stats.bypassed += len(items)
            found = {}
        results: dict[str, Any] = {}
        for key, data in found.items():
            entry = self._decode(key, data)
            if entry is not None and entry[0] == _DETERMINISTIC:
                results[key] = entry
        todo: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        hits = 0
        saved = 0.0
        for key, call in zip(keys, items):
            if key in results:
                hits += 1
                saved += results[key][2]
            else:
                todo.setdefault(key, call)
        computed = self._compute_many(todo, n_jobs)
        to_store: dict[str, bytes] = {}
        threshold = self.time_threshold
        if threshold == "auto":
            threshold = _AUTO_FACTOR * self._lookup_seconds
        below = 0
        for key, (value, elapsed) in computed.items():
            results[key] = (_DETERMINISTIC, value, elapsed)
            if elapsed < threshold:
                below += 1
                continue
            try:
                to_store[key] = self.serde.dumps(key, (_DETERMINISTIC, value, elapsed))
            except Exception as exc:
                self._not_storable(exc)
        if to_store and self._guarded(self.backend.set_many, to_store, self.expire) is not _FAIL:
            with self._lock:
                self.stats.sets += len(to_store)
        with self._lock:
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
        result = dict(zip(todo, outs))
        with self._lock:
            self.stats.compute_seconds += sum(e for _, e in result.values())
        return result


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def memoize(
    fn: Callable[P, R] | None = None,
    *,
    backend: Backend | None = None,
    **options: Any,
) -> Any:
    """Memoize ``fn`` in ``backend`` (default: the embedded disk cache).

    Usable bare (``@memoize``) or with options (``@memoize(backend=..., time_threshold=...)``);
    the options are those of ``Memoized``.
    """

    def wrap(f: Callable[P, R]) -> Memoized[P, R]:
        nonlocal backend
        if backend is None:
            backend = DiskBackend()
        return Memoized(f, backend, **options)

    return wrap if fn is None else wrap(fn)
