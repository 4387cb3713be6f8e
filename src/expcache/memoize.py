"""``Memoized``: the facade of a memoized function, and the ``memoize`` decorator.

The facade keeps what a user touches — the frozen options, the wrapper metadata, pickling,
introspection and the explicit cache operations — and dispatches calls to the call paths in
``calls`` (per-process state, rebuilt after unpickling) and ``batch``. How a call goes, what
can fail and what it costs are described there.

Pickling: a memoized function bound at module level under its own name pickles by
reference (like ``functools.lru_cache`` wrappers), so the copy in a worker is the worker's
own module attribute. One defined in a script's ``__main__`` is looked up by reference
where ``__main__`` is that script (multiprocessing spawn and forkserver re-run it as
``__mp_main__``) and otherwise rebuilt from a cloudpickle of the function (joblib's loky
workers, whose ``__main__`` is loky's): its key is the same either way.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

from .backends.base import Backend
from .backends.disk import DiskBackend, default_cache_dir
from .batch import run_batch
from .bound import BoundMemoized
from .calls import Core
from .entries import MomentsEntry, PayloadCodec, ValueEntry
from .errors import BackendError, ConfigError, SerdeError
from .explain import Explanation, explain_call
from .guard import Outcome
from .mainpickle import import_global, main_payload, restore_main
from .options import Options
from .policy import Moments, RepetitionPolicy
from .stats import CacheStats, Recorder

__all__ = ["Memoized", "default_backend", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")

_MAIN = ("__main__", "__mp_main__")
_RUNTIME = frozenset({"_core", "_rec", "_call"})
class _ReadOnly:
    """An option exposed as a read-only attribute: the options are frozen (see options.py)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.options, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"{self.name} of a memoized function is read-only (its call paths are prepared "
            f"from it); build another one with m.replace({self.name}=...)"
        )


class Memoized(Generic[P, R]):
    """A callable that answers repeated calls from a cache backend.

    Options (all keyword; validated once, then read-only):

    - ``time_threshold``: seconds a computation must take to be stored, or ``"auto"``
      (store when it took clearly longer than a lookup of this backend).
    - ``repeat``: a ``RepetitionPolicy`` for stochastic functions (re-evaluate and keep the
      running mean until it converges).
    - ``ignore_args``: parameter names left out of the key (one string is one name).
    - ``signature`` (bytes, replaces the derived function identity) / ``version`` (a string
      added to it); ``namespace``: key prefix separating projects on one store.
    - ``pickle_args``: key arguments without a canonical encoding by their pickle (``True``,
      or ``"warn"`` to be told once per argument); by default they raise ``KeyEncodingError``.
    - ``signing_key``: HMAC key for entries (else ``$EXPCACHE_SIGNING_KEY``, else unsigned).
    - ``lease``, ``lease_ttl``, ``lease_max_wait``: one computation per cold key across
      workers; ``max_cas_retries``: bound on running-moment update races; ``expire``: entry
      lifetime in seconds (0 = never); ``name``: the label in keys, logs and records;
      ``codec``: a pymemcache-style serde for the payload inside the verified envelope.

    Introspection in the style of ``functools.lru_cache``/joblib: ``stats``, ``cache_info()``,
    ``cache_key(...)``, ``check_call_in_cache(...)``, ``moments(...)``, ``__wrapped__``;
    explicit operations (these raise ``BackendError`` when the backend cannot do them):
    ``cache_clear()``, ``invalidate(...)``, ``precache(value, ...)``; ``refresh(...)``
    recomputes and stores like a call. Works as a method decorator (descriptor protocol).
    """

    __wrapped__: Callable[P, R]

    time_threshold = _ReadOnly()
    repeat = _ReadOnly()
    ignore_args = _ReadOnly()
    signature = _ReadOnly()
    version = _ReadOnly()
    namespace = _ReadOnly()
    pickle_args = _ReadOnly()
    lease = _ReadOnly()
    lease_ttl = _ReadOnly()
    lease_max_wait = _ReadOnly()
    max_cas_retries = _ReadOnly()
    expire = _ReadOnly()

    def __init__(
        self,
        fn: Callable[P, R],
        backend: Backend,
        *,
        time_threshold: float | Literal["auto"] = 0.0,
        repeat: RepetitionPolicy | None = None,
        ignore_args: Iterable[str] | str = (),
        signature: bytes | None = None,
        version: str | None = None,
        namespace: str = "",
        pickle_args: bool | Literal["warn"] = False,
        signing_key: bytes | str | None = None,
        lease: bool = True,
        lease_ttl: float = 10.0,
        lease_max_wait: float = 600.0,
        max_cas_retries: int = 200,
        expire: float = 0.0,
        name: str | None = None,
        codec: PayloadCodec | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(param="fn", value=fn, expected="a callable to memoize")
        if not isinstance(backend, Backend):
            raise ConfigError(
                param="backend", value=backend, expected="an expcache.backends.Backend instance"
            )
        options = Options(
            time_threshold=time_threshold,
            repeat=repeat,
            ignore_args=ignore_args,  # type: ignore[arg-type]  # normalised to a tuple
            signature=signature,
            version=version,
            namespace=namespace,
            pickle_args=pickle_args,
            signing_key=signing_key,  # type: ignore[arg-type]  # normalised to bytes
            lease=lease,
            lease_ttl=lease_ttl,
            lease_max_wait=lease_max_wait,
            max_cas_retries=max_cas_retries,
            expire=expire,
            name=name,
            codec=codec,
        )
        self._init(fn, backend, options)

    def _init(self, fn: Callable[P, R], backend: Backend, options: Options) -> None:
        # A callable object's __dict__ (a pyDVL Utility's data, model...) is not ours to copy.
        updated = functools.WRAPPER_UPDATES if inspect.isfunction(fn) else ()
        functools.update_wrapper(self, fn, updated=updated)
        if options.name is not None:
            self.__name__ = options.name
        self.__dict__["fn"] = fn
        self.__dict__["backend"] = backend
        self.__dict__["options"] = options
        self.config: Any = backend.describe()
        self._setup(Recorder())

    def _setup(self, rec: Recorder) -> None:
        core = Core(self.fn, self.backend, self.options, rec)
        self._rec = rec
        self._core = core
        if core.off:
            self._call: Callable[[tuple[Any, ...], Mapping[str, Any]], Any] = core.compute
        elif core.policy is not None:
            self._call = core.repeated
        else:
            self._call = core.call

    fn: Callable[P, R]
    backend: Backend
    options: Options

    def replace(self, **changes: Any) -> Memoized[P, R]:
        """Another memoized function over the same callable and backend, options changed."""
        new = object.__new__(type(self))
        new._init(self.fn, self.backend, self.options.replace(**changes))
        return new

    # -- the call ------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._call(args, kwargs)  # not typing.cast: a call of its own per hit
        return result

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """As a method: the instance is the first argument (and part of the key)."""
        if instance is None:
            return self
        return BoundMemoized(self, instance)

    def map(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]], *, n_jobs: int = 1
    ) -> list[R]:
        """Evaluate many calls with one ``get_many`` and one ``set_many`` (see ``batch``).

        Each item is a tuple of positional arguments or a mapping of keyword arguments.
        """
        return run_batch(self._core, self, calls, n_jobs)

    # -- introspection ---------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        return self._rec.stats

    @property
    def serde(self) -> Any:
        return self._core.serde

    @property
    def identity(self) -> bytes:
        """The function part of every key (16 bytes): what a run records to say which code
        produced its entries (``environment.json``), and what ``explain`` compares."""
        return self._core.keys.identity

    @property
    def label(self) -> str:
        """The function's label in keys and entries (``name=``, else module.qualname)."""
        return self._core.label

    @property
    def client(self) -> Any:
        """The backend's client for this thread (pymemcache, for the seed's ``.client``)."""
        client = getattr(self.backend, "client", None)
        if client is None:
            raise AttributeError(f"{type(self.backend).__name__} has no client")
        return client

    def cache_info(self) -> CacheStats:
        return self._rec.snapshot()

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The backend key this call is stored under."""
        return self._core.keys(args, kwargs)

    def check_call_in_cache(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Whether this call would be answered without running the function.

        Read-only: it neither counts in ``stats`` nor informs the circuit breaker.
        """
        entry = self._peek(args, kwargs)
        if type(entry) is MomentsEntry:
            policy = self.options.repeat
            return policy is not None and policy.done(entry.moments)
        return type(entry) is ValueEntry and self.options.repeat is None

    def moments(self, *args: P.args, **kwargs: P.kwargs) -> Moments | None:
        """The stored running moments of this call (stochastic functions), or None.

        Read-only like ``check_call_in_cache``: for inspecting how a mean and its standard
        error settle (``m.n``, ``m.mean``, ``m.stderr``) without evaluating anything.
        """
        if self.options.repeat is None:
            return None
        entry = self._peek(args, kwargs)
        return entry.moments if type(entry) is MomentsEntry else None

    def explain(self, *args: P.args, **kwargs: P.kwargs) -> Explanation:
        """Why this call would miss (or that it would hit): the nearest stored identity of
        this function compared part by part, or the nearest stored call argument by
        argument. Read-only; may scan this function's entries (a diagnostic, not a hot path).
        """
        return explain_call(self._core, args, kwargs)

    def _peek(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """The decoded entry of a call, read-only: no stats, no breaker bookkeeping."""
        core = self._core
        if core.off or not core.guard.breaker.allow():
            return None
        key = core.keys(args, kwargs)
        try:
            data = self.backend.get(key)
            return None if data is None else core.serde.loads(key, data)
        except (BackendError, SerdeError):
            return None

    # -- explicit operations ---------------------------------------------------------------------
    def cache_clear(self) -> int:
        """Delete this function's entries (all its versions, in its namespace) and reset
        ``stats``; other functions sharing the backend keep theirs. Returns how many keys
        were deleted. Raises ``BackendError`` when the backend cannot be reached: a clear
        that silently did nothing would leave stale entries behind.
        """
        removed = self.backend.clear(self._core.keys.prefix)
        self._rec.reset()
        return int(removed or 0)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop this call's entry (the next call recomputes it)."""
        self.backend.delete(self._core.keys(args, kwargs))

    def precache(self, value: R, *args: P.args, **kwargs: P.kwargs) -> None:
        """Store ``value`` as the result of this call, as if it had been computed."""
        core = self._core
        key = core.keys(args, kwargs)
        if self.options.repeat is not None:
            entry: ValueEntry | MomentsEntry = MomentsEntry(Moments.of(value), core.meta(0.0))
        else:
            entry = ValueEntry(value, core.meta(0.0))
        self.backend.set(key, core.serde.dumps(key, entry), self.options.expire)
        self._rec.add(sets=1)

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute this call, store the result whatever it cost, and return it.

        A stochastic function's running moments restart from this one sample.
        """
        core = self._core
        key = core.keys(args, kwargs)
        value, elapsed = core.run(args, kwargs)
        core.rec.add(misses=1, compute_seconds=elapsed)
        if core.off:
            return cast(R, value)
        try:
            if self.options.repeat is not None:
                mean = Moments.of(value)
                data = core.serde.dumps(key, MomentsEntry(mean, core.meta(elapsed)))
                value = mean.mean
            else:
                data = core.serde.dumps(key, ValueEntry(value, core.meta(elapsed)))
        except Exception as exc:
            core.guard.unstorable(exc)
            return cast(R, value)
        got = core.guard.run(self.backend.set, key, data, self.options.expire, write=True)
        if type(got) is not Outcome:
            core.rec.add(sets=1)
        return cast(R, value)

    # -- pickling --------------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> Any:
        fn = self.fn
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        if module in sys.modules and "<" not in qualname:
            try:
                found = import_global(module, qualname)
            except (AttributeError, ImportError):
                found = None
            if found is self:  # decorated in place: the module attribute *is* this object
                if module in _MAIN:
                    return restore_main, (qualname, main_payload(self))
                return import_global, (module, qualname)
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup(Recorder())

    def __repr__(self) -> str:
        return f"<Memoized {self.__name__} on {self.backend!r}>"


_DEFAULTS: dict[str, DiskBackend] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_backend() -> DiskBackend:
    """The embedded disk cache in the per-user directory, one per process and directory:
    every bare ``@memoize`` of a process shares it (and its circuit breaker)."""
    directory = default_cache_dir()
    with _DEFAULTS_LOCK:
        backend = _DEFAULTS.get(str(directory))
        if backend is None:
            backend = _DEFAULTS[str(directory)] = DiskBackend(directory)
        return backend


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
    """Memoize ``fn`` in ``backend`` (default: the embedded disk cache, shared per process).

    Usable bare (``@memoize``) or with options (``@memoize(backend=..., time_threshold=...)``);
    the options are those of ``Memoized``.
    """

    def wrap(f: Callable[P, R]) -> Memoized[P, R]:
        return Memoized(f, backend if backend is not None else default_backend(), **options)

    return wrap if fn is None else wrap(fn)
