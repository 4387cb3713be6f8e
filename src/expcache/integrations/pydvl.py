"""expcache inside pyDVL 0.10: every utility evaluation goes through the shared cache.

pyDVL's own cache keys on the pickled ``Sample`` (so the same subset with another ``idx`` or in
another order is another entry) under ``hash((model, scorer))`` (which ignores the data and
differs per process). Here the key is

    signature = content fingerprint of the utility *with its training data*:
                utility class and settings, model class + ``get_params()`` of the unfitted
                template, scorer definition and its test data, training arrays
    argument  = the evaluated subset as a sorted int64 index array (+ the extra fields of
                ``Sample`` subclasses), never ``idx``, ``id()``, ``hash()`` or a pickle

so the same subset in any order is one entry, two datasets never share entries, and an
identical utility rebuilt in another process or on another machine finds the same entries.
The utility is evaluated on the *sorted* subset: pyDVL utilities are set functions, and a
canonical order makes the stored value independent of which caller computed it first.

Failed evaluations are never stored. pyDVL's ``catch_errors=True`` turns a failing
``fit``/``score`` into the scorer's default *inside* the utility, where a cache above it can
only see a score and would keep it for ever (a transient failure, a one-class subset). So the
wrapper evaluates a copy of the utility with ``catch_errors=False`` and catches the failure
itself: the method still gets the default score (what it gets without the cache), the
memoizer counts the raise in ``failed`` and stores nothing, and the next run evaluates that
subset again. The first error message of each process is kept for the run's report.

``CachedUtility`` is a ``UtilityBase``, so every pyDVL method accepts it: it is called with
samples, rebinds to the method's data in ``with_dataset()``, is pickled into joblib workers
and forwards attribute reads (``model``, ``scorer``, ...) to the wrapped utility. The
statistics of all processes are summed by a ``RunLedger`` (see ``ledger.py``).

This module imports pyDVL; ``import expcache`` never imports it.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pydvl.valuation.dataset import Dataset
from pydvl.valuation.types import Sample
from pydvl.valuation.utility.base import UtilityBase

from ..backends.base import Backend
from ..backends.disk import DiskBackend
from ..errors import ConfigError
from ..ledger import Channel, RunLedger
from ..memoize import Memoized
from ..stats import CacheStats
from .evaluation import (
    EvaluateOrFail,
    Failed,
    default_score,
    raising_copy,
    sample_extra,
    subset_key,
)
from .fingerprint import utility_fingerprint
from .runlog import UtilityReport, forget_run, process_log, read_report

__all__ = [
    "CachedUtility",
    "Memoizer",
    "UtilityReport",
    "cached_utility",
    "forget_run",
    "raising_copy",
    "utility_fingerprint",
]

log = logging.getLogger("expcache")

# Builds the memoizer of one (utility, dataset): ``memoizer(fn, signature) -> Memoized``.
Memoizer = Callable[[Callable[..., float], bytes], Memoized[..., float]]

# Bumped in a forked child (os.fork runs the hook): the per-process state a CachedUtility
# caches for its hot path (its ledger part and run log) is then looked up again, without a
# getpid() system call on every evaluation.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------- the wrapper
class CachedUtility(UtilityBase[Sample]):
    """A pyDVL utility whose evaluations are memoized by content (see the module docstring).

    ``stats`` is the run's total over this process and every worker; ``ledger`` is the
    ``RunLedger`` shared by all copies made by ``with_dataset()`` and by pickling.

    ``catch_errors``: a failing evaluation gets the utility's default score (pyDVL's
    ``catch_errors=True`` behaviour, kept out of the cache) instead of raising; ``None``
    follows the utility's own ``catch_errors`` setting (False when it has none).
    """

    def __init__(
        self,
        utility: UtilityBase[Any],
        memoizer: Memoizer,
        *,
        ledger: RunLedger,
        signature: bytes | None = None,
        catch_errors: bool | None = None,
    ) -> None:
        if isinstance(utility, CachedUtility):
            raise ConfigError("the utility is already cached: wrap the original utility once")
        if not isinstance(utility, UtilityBase):
            raise ConfigError(
                f"utility={utility!r}: expected a pyDVL UtilityBase (e.g. ModelUtility)"
            )
        if getattr(utility, "cache", None) is not None:
            log.warning(
                "expcache: %s also has pyDVL's own cache_backend; expcache caches "
                "every evaluation already, so consider removing it",
                utility,
            )
        self._inner = utility
        self._evaluating: UtilityBase[Any] = utility
        self.catch_errors = (
            bool(getattr(utility, "catch_errors", False)) if catch_errors is None else catch_errors
        )
        self._memoizer: Memoizer | None = memoizer
        self._user_signature = signature
        self.ledger = ledger
        self._memo: Memoized[..., float] | None = None
        self.signature: bytes | None = None
        if utility.training_data is not None:
            self._bind()

    def _bind(self) -> None:
        """(Re)build the memoizer for the current training data."""
        if self._memoizer is None:
            raise ConfigError(
                "with_dataset() on a copy of a CachedUtility inside a worker process: bind "
                "the data in the parent (pyDVL's fit() does) before the utility is shipped"
            )
        # What is stored is what the raising copy computes: its fingerprint (catch_errors off)
        # never matches entries written by a utility that stored its failures as scores.
        self._evaluating = raising_copy(self._inner)
        signature = utility_fingerprint(self._evaluating, self._user_signature)
        memo = self._memoizer(EvaluateOrFail(self._evaluating), signature)
        if not isinstance(memo, Memoized):
            raise ConfigError(f"memoizer returned {memo!r}, expected an expcache Memoized")
        part = self.ledger.part()
        self.signature = signature
        self._memo = part.memo(signature, memo)
        self.__dict__["_part_cache"] = part
        self.__dict__.pop("_hot", None)  # a copy's (with_dataset) is the original's

    # -- pyDVL's interface ----------------------------------------------------------------
    @property
    def training_data(self) -> Dataset | None:
        return self._inner.training_data

    @property
    def inner(self) -> UtilityBase[Any]:
        """The wrapped utility (with the current training data)."""
        return self._inner

    def with_dataset(self, data: Dataset, copy: bool = True) -> CachedUtility:
        target = self._copy() if copy else self
        target._inner = self._inner.with_dataset(data, copy=True)  # never mutate the user's
        target._bind()
        return target

    def _copy(self) -> CachedUtility:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __call__(self, sample: Sample | None) -> float:
        if sample is None or len(sample.subset) == 0:
            # pyDVL's contract: constant and cheap (the scorer's default). Not an evaluation.
            return self._inner(sample)
        hot = self.__dict__.get("_hot")
        if hot is None or hot[0] != _fork_generation:
            hot = self._hot_state()
        _, part, pid = hot
        subset, extra = subset_key(sample.subset), sample_extra(sample)
        runlog = process_log(self.ledger, pid)
        started = time.perf_counter()
        try:
            value = self._memo(subset, extra)  # type: ignore[misc]
        except Failed as failure:  # the function's own failure: counted, nothing stored
            runlog.add(time.perf_counter() - started)
            if not part.is_owner:
                part.publish()
            exc = failure.error
            if not self.catch_errors:
                raise exc from None
            default = default_score(self._inner)
            if runlog.failed(exc):
                log.warning(
                    "expcache: an evaluation failed (%s: %s); it gets the default score %r, "
                    "as without the cache, and is not cached (the next run evaluates it "
                    "again); further failures are only counted",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    default,
                )
            return default
        runlog.add(time.perf_counter() - started)
        # Every worker call is published before it returns: pyDVL may kill a worker between
        # two calls (see ledger.py), so a batched publish could lose counts. The owner's
        # publish is a no-op (it is read in memory): not even called.
        if not part.is_owner:
            part.publish()
        return value

    def evaluate_uncached(self, sample: Sample) -> float:
        """One evaluation of ``sample`` with errors raised, outside the cache (not counted):
        a setup check that the configuration can be evaluated at all."""
        if self.training_data is None:
            raise ConfigError("no training data bound yet: call with_dataset(data) first")
        return float(self._evaluating(sample))

    def report(self) -> UtilityReport:
        """Time in calls and the first error, over this process and every worker (read it
        before ``ledger.close()``, which removes the workers' records)."""
        return read_report(self.ledger)

    def _hot_state(self) -> tuple[int, Any, int]:
        """What ``__call__`` needs per process, looked up once per process (and again after
        a fork): the fork generation it is valid for, this process's ledger part, its pid."""
        part = self.__dict__.get("_part_cache")
        if part is None or part.pid != os.getpid():
            part = self._attach()
        hot = (_fork_generation, part, part.pid)
        self.__dict__["_hot"] = hot
        return hot

    def _attach(self) -> Any:
        """First call in this process (a worker's unpickled copy, a forked child): use the
        process's shared memoizer for this signature, so its counters are the process's."""
        if self._memo is None or self.signature is None:
            raise ConfigError(
                "CachedUtility called before it has training data: call with_dataset(data) "
                "or pass it to a valuation method's fit(data)"
            )
        part = self.ledger.part()
        self._memo = part.memo(self.signature, self._memo)
        self.__dict__["_part_cache"] = part
        return part

    # -- statistics -----------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        """The run's counters: this process plus every worker that evaluated for it."""
        return self.ledger.collect()

    @property
    def memoized(self) -> Memoized[..., float] | None:
        """This process's memoizer for the current data (``None`` before data is bound)."""
        return self._memo

    def cache_key(self, sample: Sample) -> str:
        """The backend key of ``sample``'s evaluation (the same for any order or ``idx``)."""
        if self._memo is None:
            raise ConfigError("no training data bound yet: call with_dataset(data) first")
        return self._memo.cache_key(subset_key(sample.subset), sample_extra(sample))

    # -- plumbing -------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this wrapper lacks: forward reads such as ``model`` or
        # ``scorer`` that some pyDVL methods make. Guarded for half-unpickled objects.
        if name.startswith("__") or name in ("_inner", "_memo", "ledger", "signature"):
            raise AttributeError(name)
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_part_cache", None)
        state.pop("_hot", None)
        state["_memoizer"] = None  # may close over a context; workers never rebind
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __str__(self) -> str:
        return f"Cached{self._inner}"

    def __repr__(self) -> str:
        memo = self._memo
        where = memo.backend if memo is not None else "unbound"
        return f"<CachedUtility of {self._inner!r} on {where!r}>"


def _default_memoizer(backend: Backend, name: str | None, options: dict[str, Any]) -> Memoizer:
    return functools.partial(_memoize, backend, name, options)


def _memoize(
    backend: Backend,
    name: str | None,
    options: dict[str, Any],
    fn: Callable[..., float],
    signature: bytes,
) -> Memoized[..., float]:
    return Memoized(fn, backend, signature=signature, name=name, **options)


def cached_utility(
    utility: UtilityBase[Any],
    backend: Backend | None = None,
    *,
    memoizer: Memoizer | None = None,
    signature: bytes | None = None,
    name: str | None = "pydvl_utility",
    stats_dir: str | None = None,
    stats_channel: Channel = "auto",
    run_id: str | None = None,
    catch_errors: bool | None = None,
    **memoize_options: Any,
) -> CachedUtility:
    """Wrap a pyDVL utility so that every evaluation goes through expcache.

    ``backend`` defaults to the embedded disk cache; ``memoize_options`` are those of
    ``expcache.Memoized`` (``time_threshold``, ``repeat``, ``namespace``, ``version``, ...).
    ``memoizer`` replaces both: a callable ``(fn, signature) -> Memoized``, e.g. a Hydra
    context's ``wrap`` (then ``backend`` only serves the worker statistics). ``signature``
    stands in for the utility's own description when expcache cannot encode the model or
    scorer. ``stats_dir``/``stats_channel``/``run_id`` configure the ``RunLedger``.
    ``catch_errors`` (None: the utility's own setting) turns a failed evaluation into the
    utility's default score, never stored (see the module docstring).
    """
    if memoizer is not None and memoize_options:
        raise ConfigError(
            f"pass either memoizer= or memoize options, not both (got "
            f"{sorted(memoize_options)}): the memoizer already applies its own policy"
        )
    if backend is None:
        backend = DiskBackend()
    if memoizer is None:
        memoizer = _default_memoizer(backend, name, dict(memoize_options))
    ledger = RunLedger(backend, directory=stats_dir, channel=stats_channel, run_id=run_id)
    return CachedUtility(
        utility, memoizer, ledger=ledger, signature=signature, catch_errors=catch_errors
    )
