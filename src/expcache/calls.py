"""The call paths of one memoized function, and the per-process state they share.

One call, as data::

    hit:    key -> get -> verify envelope -> typed entry -> return        (one round trip)
    miss:   ... get misses -> lease -> run, time it -> [worth storing] set -> done -> return
    repeat: key -> gets -> [converged? return mean] -> run -> fold a finite sample -> add/cas

``Core`` is built once per process (``Memoized`` rebuilds it after unpickling): the key
maker, the serde, the guard (failure policy), the recorder (counters) and the lease factory,
prepared from the frozen options so that a call only does the work of that call.

Every exit of a miss releases its lease (``with lease:``), the function's own exception
included, which also reaches the caller unchanged and is counted in ``failed``. Nothing
decoded from a backend reaches the caller unverified, and nothing a backend or a decoder
raises escapes a call: it is counted and the function's own value is returned.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .backends.base import Backend
from .backends.null import NullBackend
from .entries import Meta, MomentsEntry, ValueEntry
from .errors import BackendError, SerdeError, ValueTooLarge
from .explain import note_identity
from .filelease import FileLease, LocalLease
from .guard import FAILED, REFUSED, Guard, Outcome
from .keys import KeyMaker, default_label, pack_argument_digests
from .lease import NO_LEASE, Claim, Lease, StoreLease
from .options import Options
from .policy import Moments, RepetitionPolicy, is_finite
from .serde import Serde, signing_key_from_env
from .stats import Recorder

__all__ = ["Core"]

# "auto" stores results that took longer than two lookups: a hit then saves at least one
# lookup's worth.
_AUTO_FACTOR: Final = 2.0
_NOTHING: Final[Any] = object()
Args = tuple[Any, ...]
Kwargs = Mapping[str, Any]


class Core:
    """What one memoized function needs in this process (see the module docstring)."""

    def __init__(
        self, fn: Callable[..., Any], backend: Backend, options: Options, rec: Recorder
    ) -> None:
        self.fn = fn
        self.backend = backend
        self.options = options
        self.rec = rec
        self.label = options.name if options.name is not None else default_label(fn)
        version = options.version
        if options.repeat is not None:
            # Running moments and plain values of one call live under different keys, so two
            # policies sweeping one namespace never overwrite each other's entries.
            version = "repeated" if version is None else f"{version}|repeated"
        self.keys = KeyMaker(
            fn,
            ignore_args=options.ignore_args,
            signature=options.signature,
            version=version,
            namespace=options.namespace,
            pickle_args=options.pickle_args,
            label=self.label,
        )
        key = options.signing_key if options.signing_key is not None else signing_key_from_env()
        self.serde = Serde(key, max_size=backend.max_value_size, codec=options.codec)
        self.breaker = backend.breaker
        self.guard = Guard(backend, rec, options.name or str(getattr(fn, "__name__", self.label)))
        self.off = isinstance(backend, NullBackend)
        self.auto = options.time_threshold == "auto"
        self.lookup_seconds = 0.0  # running estimate of one lookup's cost (for "auto")
        self.lookups = 0
        self.expire = options.expire
        self.policy: RepetitionPolicy | None = options.repeat
        self.new_lease = self._lease_factory()
        self.manifest_noted = False  # explain: this process recorded its identity
        # bound once: the hit path's attribute lookups
        self._get = backend.get
        self._loads = self.serde.loads
        self._hit = self.serde.hit

    # -- leases ------------------------------------------------------------------------------
    def _lease_factory(self) -> Callable[[str, bytes | None], Lease]:
        """The lease each miss takes: none, in-process (memory), a file lock (disk: one
        host) or an item of the store itself (memcached, any other shared backend)."""
        o = self.options
        backend = self.backend
        if not o.lease or self.off:
            return lambda key, seen: NO_LEASE
        guard = self.guard
        decode = self.decode_value
        if backend.scope == "process":
            return lambda key, seen: LocalLease(
                guard, key, decode(key), seen, max_wait=o.lease_max_wait
            )
        directory = getattr(backend, "directory", None)
        if backend.scope == "host" and isinstance(directory, Path):
            return lambda key, seen: FileLease(
                guard, key, decode(key), seen, directory=directory, max_wait=o.lease_max_wait
            )
        signing = self.serde.signing_key
        return lambda key, seen: StoreLease(
            guard, key, decode(key), seen, ttl=o.lease_ttl, max_wait=o.lease_max_wait,
            signing_key=signing,
        )

    # -- shared pieces -------------------------------------------------------------------------
    def run(self, args: Args, kwargs: Kwargs) -> tuple[Any, float]:
        """The function itself, timed; a raise is counted and reaches the caller unchanged."""
        started = time.perf_counter()
        try:
            value = self.fn(*args, **kwargs)
        except BaseException:
            self.rec.add(failed=1, compute_seconds=time.perf_counter() - started)
            raise
        return value, time.perf_counter() - started

    def compute(self, args: Args, kwargs: Kwargs) -> Any:
        """Run without the cache (off, bypassed or failed): a miss that stores nothing."""
        value, elapsed = self.run(args, kwargs)
        self.rec.add(misses=1, compute_seconds=elapsed)
        return value

    def meta(self, seconds: float, args: bytes = b"") -> Meta:
        return Meta(
            function=self.label,
            created=time.time(),
            seconds=seconds,
            identity=self.keys.identity,
            args=args,
        )

    def call_meta(self, seconds: float, args: Args, kwargs: Kwargs) -> Meta:
        """Metadata of a stored call, with per-argument digests for ``explain`` (a miss
        pays for them: encoding the arguments once more, a few microseconds)."""
        try:
            packed = pack_argument_digests(self.keys.argument_digests(args, kwargs))
        except Exception:  # diagnostics only: never fail a store over them
            packed = b""
        return self.meta(seconds, packed)

    def decode(self, key: str, data: bytes) -> ValueEntry | MomentsEntry | None:
        """The verified entry, or None (counted in ``corrupt``, logged once)."""
        try:
            return self._loads(key, data)
        except SerdeError as exc:
            self.guard.corrupt(exc)
            return None

    def decode_value(self, key: str) -> Callable[[bytes], ValueEntry | None]:
        def decode(data: bytes) -> ValueEntry | None:
            entry = self.decode(key, data)
            return entry if type(entry) is ValueEntry else None

        return decode

    def threshold(self) -> float:
        """Seconds a result must have taken to be stored (``auto``: relative to a lookup)."""
        if self.auto:
            return _AUTO_FACTOR * self.lookup_seconds
        return float(self.options.time_threshold)

    def note_lookup(self, seconds: float) -> None:
        # The first lookup pays for connecting (or creating the disk cache): it stands in
        # only until a second one replaces it; after that, a moving average.
        self.lookups += 1
        if self.lookups <= 2:
            self.lookup_seconds = seconds
        else:
            self.lookup_seconds = 0.9 * self.lookup_seconds + 0.1 * seconds

    def store(
        self, key: str, value: Any, elapsed: float, args: Args, kwargs: Kwargs
    ) -> bool | Outcome:
        """True stored; False deliberately not (too fast, unpicklable, refused); FAILED."""
        if elapsed < self.threshold():
            self.rec.add(below_threshold=1)
            return False
        try:
            data = self.serde.dumps(key, ValueEntry(value, self.call_meta(elapsed, args, kwargs)))
        except ValueTooLarge as exc:
            self.guard.too_large(exc)
            return False
        except Exception as exc:  # an unpicklable result is returned, just not stored
            self.guard.unstorable(exc)
            return False
        got: Any = self.guard.run(self.backend.set, key, data, self.expire, write=True)
        if got is FAILED:
            return Outcome.FAILED
        if got is REFUSED:
            return False
        self.rec.add(sets=1)
        if not self.manifest_noted:
            note_identity(self)
        return True

    # -- deterministic -------------------------------------------------------------------------
    def call(self, args: Args, kwargs: Kwargs) -> Any:
        key = self.keys(args, kwargs)
        breaker = self.breaker
        if breaker._failures >= breaker.threshold and not breaker.allow():
            self.rec.add(bypassed=1)
            return self.compute(args, kwargs)
        started = time.perf_counter() if self.auto else 0.0
        try:
            data = self._get(key)
        except BackendError as exc:
            self.guard.failed(exc)
            return self.compute(args, kwargs)
        if breaker._failures or self.guard.down:
            self.guard.ok()
        if data is not None:
            try:
                got: tuple[Any, ...] | None = self._hit(key, data)  # (value, seconds, ...)
                if got is None:
                    entry = self._loads(key, data)
                    got = (entry.value, entry.meta.seconds) if type(entry) is ValueEntry else None
            except SerdeError as exc:
                self.guard.corrupt(exc)
            else:
                if got is not None:
                    self.rec.hit(got[1])
                    return got[0]
        if self.auto:
            self.note_lookup(time.perf_counter() - started)
        return self.miss(key, args, kwargs, data)

    def miss(self, key: str, args: Args, kwargs: Kwargs, seen: bytes | None) -> Any:
        with self.new_lease(key, seen) as lease:
            claim = lease.acquire()
            if claim is Claim.WAIT:
                claim = lease.wait()
            if type(claim) is ValueEntry:  # another worker stored it meanwhile
                self.rec.hit(claim.meta.seconds)
                return claim.value
            value, elapsed = self.run(args, kwargs)
            self.rec.add(misses=1, compute_seconds=elapsed)
            if claim is Claim.FAILED:  # the backend failed this call: leave it alone
                lease.abandon()
                return value
            stored = self.store(key, value, elapsed, args, kwargs)
            if stored is FAILED:
                lease.abandon()  # one failed operation per call: no release round trip
            else:
                lease.done(stored is True)
        return value

    # -- stochastic ----------------------------------------------------------------------------
    def repeated(self, args: Args, kwargs: Kwargs) -> Any:
        key = self.keys(args, kwargs)
        policy = self.policy
        assert policy is not None
        guard = self.guard
        backend = self.backend
        if not guard.breaker.allow():
            self.rec.add(bypassed=1)
            return _sample_mean(self.compute(args, kwargs))
        value: Any = _NOTHING
        elapsed = 0.0
        moments: Moments | None = None
        new: Moments | None = None
        for attempt in range(self.options.max_cas_retries):
            got = guard.run(backend.gets, key)
            if type(got) is Outcome:
                break
            data, token = got
            moments, seconds = self._moments(key, data)
            if value is _NOTHING:
                if moments is not None and policy.done(moments):
                    self.rec.hit(seconds)
                    return moments.mean
                value, elapsed = self.run(args, kwargs)
                if moments is None:
                    self.rec.add(misses=1, compute_seconds=elapsed)
                else:
                    self.rec.add(repeats=1, compute_seconds=elapsed)
                if not is_finite(value):
                    return self._nonfinite(key, value)
            new = Moments.of(value) if moments is None else moments.add(value)
            try:
                payload = self.serde.dumps(
                    key, MomentsEntry(new, self.call_meta(elapsed, args, kwargs))
                )
            except Exception as exc:
                guard.unstorable(exc)
                return new.mean
            if data is None:
                ok = guard.run(backend.add, key, payload, self.expire, write=True)
            else:
                ok = guard.run(backend.cas, key, payload, token, self.expire, write=True)
            if type(ok) is Outcome:
                return new.mean
            if ok:
                self.rec.add(sets=1)
                if not self.manifest_noted:
                    note_identity(self)
                return new.mean
            # Another worker changed the entry since our read: fold into its state instead.
            time.sleep(random.random() * 0.0005 * min(attempt + 1, 20))
        else:
            self.rec.add(conflicts=1)
            guard.warn_once(
                "conflict",
                "expcache: %s: gave up updating the running moments of %s after %d "
                "conflicting updates; the evaluation is returned but not recorded "
                "(counted in stats.conflicts)",
                key,
                self.options.max_cas_retries,
            )
            assert new is not None
            return new.mean
        if value is _NOTHING:  # the backend failed before anything ran
            value = self.compute(args, kwargs)
            if not is_finite(value):
                return self._nonfinite(key, value)
        return (Moments.of(value) if moments is None else moments.add(value)).mean

    def _moments(self, key: str, data: bytes | None) -> tuple[Moments | None, float]:
        if data is None:
            return None, 0.0
        entry = self.decode(key, data)
        if type(entry) is not MomentsEntry:
            return None, 0.0
        return entry.moments, entry.meta.seconds

    def _nonfinite(self, key: str, value: Any) -> Any:
        self.rec.add(nonfinite=1)
        self.guard.warn_once(
            "nonfinite",
            "expcache: %s: a sample of %s is NaN or infinite; it is returned but not folded "
            "into the running mean (counted in stats.nonfinite)",
            key,
        )
        return value


def _sample_mean(value: Any) -> Any:
    """What a repeated call returns for one uncached sample: the sample as a number."""
    return Moments.of(value).mean if is_finite(value) else value
