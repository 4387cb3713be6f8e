"""pyDVL 0.10's ``CacheBackend`` interface, answered by expcache.

``ModelUtility(model, scorer, cache_backend=ExpcacheCacheBackend(...))`` works unchanged:
pyDVL calls ``cache_backend.wrap(self._utility, config=cached_func_options)`` when the utility
is built, copied (``with_dataset``) or unpickled in a joblib worker, and then calls the
wrapper with one ``Sample`` per evaluation. ``wrap`` is the whole contract pyDVL uses, so that
is where expcache takes over; pyDVL's own ``get``/``set`` protocol is not used.

Why not pyDVL's keys: ``ModelUtility`` fills ``CachedFuncConfig.hash_prefix`` with
``str(hash((model, scorer)))`` -- object addresses, different in every process and for every
re-created utility -- and hashes the pickled ``Sample`` (its ``idx`` and the subset's order)
but never the training data. So entries are never shared between separately started
processes, the same subset in another order is another entry, and one utility re-bound to
other data returns the first dataset's values. Here the key is the content fingerprint of
``expcache.integrations.pydvl`` (model class and unfitted parameters, scorer with its test
data, the training data) plus the canonical sorted subset -- exactly the key of
``cached_utility``, so the two share entries.

``CachedFuncConfig`` fields:

- ``time_threshold``: honoured (store only results that took at least that long; pyDVL's
  default is 0.3 s, which stores no fast model -- pass ``time_threshold=`` to the adapter to
  override it for every utility, ``0`` or ``"auto"``).
- ``allow_repeated_evaluations``, ``rtol_stderr``, ``min_repetitions``: a
  ``RepetitionPolicy`` with expcache's rule (``|mean|``, exactly ``min_repetitions``
  evaluations at least; pyDVL ran one more), unless the adapter has ``repeat=``.
- ``hash_prefix``: ignored. pyDVL fills it with the per-process hash above, so it cannot
  tell a deliberate prefix from the default; use the adapter's ``version=`` or ``namespace=``
  to keep experiments apart.
- ``ignore_args``: meaningless for a utility (its only argument is the sample, keyed by
  content); honoured for plain functions wrapped directly (names the function does not take
  are dropped, as pyDVL does).

This module imports pyDVL; ``import expcache`` never imports it.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydvl.utils.caching.base import CacheBackend as _CacheBackend
from pydvl.utils.caching.base import CachedFunc
from pydvl.utils.caching.config import CachedFuncConfig
from pydvl.valuation.types import Sample
from pydvl.valuation.utility.base import UtilityBase

from .. import _validate
from ..backends.base import Backend
from ..backends.disk import DiskBackend
from ..errors import ConfigError
from ..keys import key_prefix
from ..memoize import Memoized
from ..policy import RepetitionPolicy
from ..stats import CacheStats
from .evaluation import (
    Evaluate,
    Failed,
    canonical_subset,
    default_score,
    raising_copy,
    sample_extra,
)
from .fingerprint import utility_fingerprint

__all__ = ["CachedUtilityFunc", "ExpcacheCacheBackend"]

log = logging.getLogger("expcache")

Threshold = float | Literal["auto"]

# Memoizers live per process, not per object: pyDVL copies the utility (and with it the
# adapter) for every ``with_dataset`` and every joblib task, and all those copies must count
# into one ``stats`` and share one memoizer per content. Keyed by (adapter token, pid) so a
# forked child never uses its parent's objects; values: spec -> Memoized.
_MEMOS: dict[tuple[str, int], dict[Any, Memoized[..., Any]]] = {}
_LOCK = threading.Lock()


def _reset_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a child must not inherit a lock held by another thread


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _evaluate(subset: Any, extra: Any = None, *, run: Callable[[Sample], float]) -> float:
    """What the memoizer of a utility wraps. ``subset``/``extra`` are the key (spelled as
    ``cached_utility``'s evaluator spells them, so both find the same entries); ``run`` -- the
    calling copy's raising ``_utility`` -- is in ``ignore_args``: any copy with the same
    fingerprint computes the same value, and no memoizer keeps a copy (and its data) alive.
    A failure leaves as ``Failed``: counted by the memoizer, never stored."""
    try:
        return Evaluate(run)(subset, extra)  # type: ignore[arg-type]
    except Exception as exc:
        raise Failed(exc) from exc


class ExpcacheCacheBackend(_CacheBackend):
    """A pyDVL 0.10 ``CacheBackend`` that stores through an expcache ``Backend``.

    ``backend`` is any expcache backend (default: the embedded ``DiskBackend``). The memoizer
    options are those of ``expcache.Memoized``; ``time_threshold``/``repeat`` left at ``None``
    follow each utility's ``CachedFuncConfig``. ``signature`` stands in for the description
    of model and scorer when expcache cannot encode them (the data is fingerprinted anyway).

    ``stats`` sums every utility this adapter cached *in this process* (its copies in joblib
    workers count in the workers). The adapter pickles with the utility and connects lazily:
    nothing touches the backend before the first evaluation.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        time_threshold: Threshold | None = None,
        repeat: RepetitionPolicy | None = None,
        namespace: str = "",
        version: str | None = None,
        signature: bytes | None = None,
        signing_key: bytes | str | None = None,
        lease: bool = True,
        lease_ttl: float = 10.0,
        lease_max_wait: float = 600.0,
        expire: float = 0,
        name: str = "pydvl_utility",
    ) -> None:
        # pyDVL's __init__ only sets ``self.stats``, which is a live sum here: not called.
        self.backend = DiskBackend() if backend is None else backend
        if time_threshold is not None and time_threshold != "auto":
            time_threshold = _validate.number(
                "time_threshold", time_threshold, ge=0, unit="seconds",
                hint='or "auto", or None to follow each CachedFuncConfig',
            )
        if repeat is not None and not isinstance(repeat, RepetitionPolicy):
            raise ConfigError(
                param="repeat", value=repeat, expected="a RepetitionPolicy or None"
            )
        if signature is not None and not isinstance(signature, bytes):
            raise ConfigError(param="signature", value=signature, expected="bytes or None")
        self.time_threshold = time_threshold
        self.repeat = repeat
        self.signature = signature
        self.name = _validate.text("name", name, pattern=r".+", describe="a non-empty string")
        self.options: dict[str, Any] = {
            "namespace": namespace, "version": version, "signing_key": signing_key,
            "lease": lease, "lease_ttl": lease_ttl, "lease_max_wait": lease_max_wait,
            "expire": expire,
        }
        # Every other option is checked by building one memoizer now, with Memoized's own
        # rules (backend type, namespace, signing key length, ...): an error here, not at
        # the thousandth evaluation inside a worker.
        self._memoizer(_evaluate, signature=b"probe", time_threshold=0, repeat=repeat)
        self.token = uuid.uuid4().hex  # names this adapter and its pickled copies

    # -- what pyDVL calls -------------------------------------------------------------------
    def wrap(
        self, func: Callable[..., Any], *, config: CachedFuncConfig | None = None
    ) -> CachedFunc:
        """Cache ``func``: a pyDVL utility's bound ``_utility`` is keyed by content; any other
        callable by expcache's own function identity and arguments."""
        config = CachedFuncConfig() if config is None else config
        if isinstance(getattr(func, "__self__", None), UtilityBase):
            return CachedUtilityFunc(func, cache_backend=self, config=config)
        return _CachedPlainFunc(func, cache_backend=self, config=config)

    def clear(self) -> None:
        """Delete this adapter's entries -- every utility cached under its ``name`` in its
        ``namespace`` -- and reset ``stats``, as ``Memoized.cache_clear`` does.

        pyDVL's own backends flush the whole server: on a shared memcached that deletes every
        colleague's entries too. Raises ``BackendError`` when the backend is unreachable: a
        clear that silently did nothing would leave stale entries behind.
        """
        self.backend.clear(key_prefix(self.options["namespace"], self.name))
        for memo in self.memoized:
            memo.stats.reset()

    def combine_hashes(self, *args: str) -> str:
        """pyDVL's own key joining, kept for ``CachedFunc`` subclasses that call it; expcache
        keys never go through it."""
        return ":".join(args)

    def get(self, key: str) -> Any:
        raise NotImplementedError(
            "ExpcacheCacheBackend caches through wrap(): pyDVL's get/set protocol keys by "
            "hash((model, scorer)) and a pickled Sample, which is what this adapter replaces"
        )

    def set(self, key: str, value: Any) -> None:
        self.get(key)

    # -- expcache's view ---------------------------------------------------------------------
    # expcache's CacheStats has pyDVL's six fields with the same meanings plus its own, but is
    # not pyDVL's class; and pyDVL's is a plain attribute, here it is a live sum.
    @property
    def stats(self) -> CacheStats:  # type: ignore[override]
        """Counters of every evaluation through this adapter in this process."""
        total = CacheStats()
        for memo in self.memoized:
            total = total + memo.stats
        return total

    @property
    def memoized(self) -> list[Memoized[..., Any]]:
        """This process's memoizers (one per utility content and policy)."""
        with _LOCK:
            return list(_MEMOS.get((self.token, os.getpid()), {}).values())

    def _memoizer(self, fn: Callable[..., Any], **options: Any) -> Memoized[..., Any]:
        return Memoized(fn, self.backend, name=self.name, **self.options, **options)

    def _shared(self, spec: Any, build: Callable[[], Memoized[..., Any]]) -> Memoized[..., Any]:
        """The process's memoizer for ``spec``, built once."""
        with _LOCK:
            memos = _MEMOS.setdefault((self.token, os.getpid()), {})
            memo = memos.get(spec)
            if memo is None:
                memo = memos[spec] = build()
            return memo

    def _policy(self, config: CachedFuncConfig) -> tuple[Threshold, RepetitionPolicy | None]:
        """The adapter's settings where given, else the utility's ``CachedFuncConfig``."""
        threshold = self.time_threshold
        if threshold is None:
            threshold = _validate.number(
                "CachedFuncConfig.time_threshold", config.time_threshold, ge=0, unit="seconds"
            )
        repeat = self.repeat
        if repeat is None and _validate.boolean(
            "CachedFuncConfig.allow_repeated_evaluations", config.allow_repeated_evaluations
        ):
            repeat = RepetitionPolicy(
                min_repetitions=config.min_repetitions, rtol_stderr=config.rtol_stderr
            )
        return threshold, repeat

    def __repr__(self) -> str:
        return f"ExpcacheCacheBackend({self.backend!r}, name={self.name!r})"


class CachedUtilityFunc(CachedFunc):
    """The wrapper pyDVL stores as ``utility._utility_wrapper``: one call per ``Sample``.

    The utility's fingerprint is taken at its first evaluation (``wrap`` runs before
    ``with_dataset`` binds the data) and again whenever the training data object changes.
    Settings changed in place afterwards (``utility.model.set_params``) are not seen: build a
    new utility, as pyDVL recommends anyway.
    """

    def __init__(
        self,
        func: Callable[[Sample], float],
        *,
        cache_backend: ExpcacheCacheBackend,
        config: CachedFuncConfig,
    ) -> None:
        super().__init__(func, cache_backend=cache_backend, config=config)
        self.adapter = cache_backend
        self.utility: UtilityBase[Any] = func.__self__  # type: ignore[attr-defined]
        self.time_threshold, self.repeat = cache_backend._policy(config)
        # (training data, pid, memoizer, the utility with pyDVL's catch_errors off)
        self._bound: tuple[Any, int, Memoized[..., float], UtilityBase[Any]] | None = None
        self._warned = False

    @property
    def memoized(self) -> Memoized[..., float]:
        """The memoizer of the utility's current content (fingerprinted on first use)."""
        data = self.utility.training_data
        bound = self._bound
        if bound is not None and bound[0] is data and bound[1] == os.getpid():
            return bound[2]
        adapter = self.adapter
        # pyDVL's catch_errors=True turns a failed fit into the scorer's default inside
        # _utility: evaluating that would store failures as scores. A raising copy is
        # evaluated (and fingerprinted, as cached_utility does, so both share entries);
        # this layer gives the default score without storing it.
        raising = raising_copy(self.utility)
        fingerprint = utility_fingerprint(raising, adapter.signature)

        def build() -> Memoized[..., float]:
            return adapter._memoizer(
                _evaluate, signature=fingerprint, time_threshold=self.time_threshold,
                repeat=self.repeat, ignore_args=("run",),
            )

        memo = adapter._shared((fingerprint, self.time_threshold, self.repeat), build)
        # keeps ``data`` alive: its id stays unique
        self._bound = (data, os.getpid(), memo, raising)
        return memo

    def __call__(self, sample: Sample) -> float:
        if not isinstance(sample, Sample):
            raise TypeError(f"a pyDVL utility is called with a Sample, got {sample!r}")
        memo = self.memoized
        assert self._bound is not None
        run = self._bound[3]._utility  # type: ignore[attr-defined]
        try:
            value: float = memo(canonical_subset(sample.subset), sample_extra(sample), run=run)
        except Failed as failure:
            if not getattr(self.utility, "catch_errors", False):
                raise failure.error from None
            default = default_score(self.utility)
            if not self._warned:
                self._warned = True
                log.warning(
                    "expcache: an evaluation failed (%r); it gets the default score %r, as "
                    "with pyDVL's catch_errors, and is not cached (counted in stats.failed)",
                    failure.error, default,
                )
            return default
        return value

    def cache_key(self, sample: Sample) -> str:
        """The backend key of ``sample`` (the same for any order of the subset, any idx)."""
        subset, extra = canonical_subset(sample.subset), sample_extra(sample)
        return self.memoized.cache_key(subset, extra, run=None)

    @property
    def signature(self) -> bytes | None:
        """The utility's content fingerprint, once it has been evaluated with data."""
        bound = self._bound
        return None if bound is None else bound[2].signature

    @property
    def stats(self) -> CacheStats:  # type: ignore[override]  # see ExpcacheCacheBackend.stats
        """As pyDVL's ``CachedFunc.stats``: the backend's counters (every utility it caches)."""
        return self.adapter.stats


class _CachedPlainFunc(CachedFunc):
    """``wrap`` of any other callable: an expcache ``Memoized`` with pyDVL's ignore_args rule
    (names the function cannot receive are dropped instead of being an error)."""

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        cache_backend: ExpcacheCacheBackend,
        config: CachedFuncConfig,
    ) -> None:
        super().__init__(func, cache_backend=cache_backend, config=config)
        self.adapter = cache_backend
        threshold, repeat = cache_backend._policy(config)
        ignore = _receivable(func, _validate.names("CachedFuncConfig.ignore_args",
                                                  list(config.ignore_args)))
        memo = cache_backend._memoizer(
            func, time_threshold=threshold, repeat=repeat, ignore_args=ignore
        )
        self.memoized = cache_backend._shared(("plain", id(memo)), lambda: memo)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.memoized(*args, **kwargs)

    @property
    def stats(self) -> CacheStats:  # type: ignore[override]  # see ExpcacheCacheBackend.stats
        return self.adapter.stats


def _receivable(func: Callable[..., Any], names: Iterable[str]) -> tuple[str, ...]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return ()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return tuple(names)
    known = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL,)}
    dropped = [n for n in names if n not in known]
    if dropped:
        log.debug("expcache: ignore_args %s: %s() does not take them", dropped, func)
    return tuple(n for n in names if n in known)
