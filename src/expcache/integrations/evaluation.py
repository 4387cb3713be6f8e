"""What the memoizer of a pyDVL utility wraps, and the argument it is keyed by.

Shared by ``CachedUtility`` (``pydvl.py``) and pyDVL 0.10's ``CacheBackend`` adapter
(``pydvl_backend.py``), so that both key a sample alike -- its subset as a sorted read-only
int64 array plus the extra fields of ``Sample`` subclasses, never ``idx`` -- and evaluate
what the key describes, with failures kept apart from the cache layer's own errors.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
from pydvl.valuation.types import Sample
from pydvl.valuation.utility.base import UtilityBase

__all__ = [
    "Evaluate",
    "EvaluateOrFail",
    "Failed",
    "canonical_subset",
    "default_score",
    "raising_copy",
    "sample_extra",
    "subset_key",
]

_SAMPLE_CORE = ("idx", "subset")


# ------------------------------------------------------------------------- evaluation
class Evaluate:
    """What the memoizer wraps: canonical subset (+ sample extras) -> utility value.

    The arguments *are* the key (``signature`` carries the rest), so a miss evaluates exactly
    the canonical sample the key describes. ``__slots__``: nothing to copy onto the memoizer.
    """

    __slots__ = ("utility",)

    def __init__(self, utility: UtilityBase[Any]) -> None:
        self.utility = utility

    def __call__(self, subset: np.ndarray[Any, Any], extra: tuple[Any, ...] | None = None) -> float:
        if extra is None:
            sample: Sample = Sample(None, subset)
        else:
            cls, values = extra
            sample = cls(idx=None, subset=subset, **dict(values))
        return float(self.utility(sample))

    def __getstate__(self) -> Any:
        return self.utility

    def __setstate__(self, state: Any) -> None:
        self.utility = state

    def __repr__(self) -> str:
        return f"evaluate({self.utility})"


class Failed(Exception):
    """A failed evaluation on its way through the memoizer (which counts it in ``failed`` and
    stores nothing): telling the function's own failure apart from anything the cache layer
    could raise (a key that cannot be encoded must never become a default score)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class EvaluateOrFail(Evaluate):
    """``Evaluate`` whose failures arrive as ``Failed`` (``CachedUtility``'s memoizer)."""

    __slots__ = ()

    def __call__(self, subset: np.ndarray[Any, Any], extra: tuple[Any, ...] | None = None) -> float:
        try:
            return super().__call__(subset, extra)
        except Exception as exc:
            raise Failed(exc) from exc


def raising_copy(utility: UtilityBase[Any]) -> UtilityBase[Any]:
    """``utility`` with pyDVL's ``catch_errors`` off (a copy; the user's object is untouched).

    A utility without the setting is returned as it is. pyDVL's ``ModelUtility`` rebuilds its
    call wrapper on copy (``__setstate__``); it is rebuilt once more after the switch, so no
    wrapper bound to the original object can keep catching.
    """
    if not getattr(utility, "catch_errors", False):
        return utility
    raising = copy.copy(utility)
    raising.catch_errors = False  # type: ignore[attr-defined]
    rebuild = getattr(raising, "_initialize_utility_wrapper", None)
    if callable(rebuild):
        rebuild()
    return raising


def default_score(utility: UtilityBase[Any]) -> float:
    """What pyDVL gives a failed evaluation: the scorer's default (the empty set's value)."""
    default = getattr(getattr(utility, "scorer", None), "default", None)
    if isinstance(default, (int, float)):
        return float(default)
    return float(utility(None))


def sample_extra(sample: Sample) -> tuple[Any, ...] | None:
    """The fields of a ``Sample`` subclass beyond ``idx``/``subset``: they are part of the key."""
    if type(sample) is Sample:
        return None
    values = tuple(
        (f.name, getattr(sample, f.name))
        for f in dataclasses.fields(sample)
        if f.name not in _SAMPLE_CORE
    )
    return (type(sample), values)


def canonical_subset(subset: Any) -> np.ndarray[Any, Any]:
    """The key argument of any subset pyDVL may hand over (arrays of every integer dtype,
    lists, tuples, empty): a sorted, read-only int64 copy. The reference for ``subset_key``."""
    arr = np.asarray(subset)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(f"a sample's subset must be a 1-d integer index array, got {arr!r}")
    out = np.sort(arr.astype(np.int64, copy=False))
    out.flags.writeable = False
    return out


_INT64 = np.dtype(np.int64)


def subset_key(subset: Any) -> np.ndarray[Any, Any]:
    """``canonical_subset(subset)``, sooner for what pyDVL's samplers actually pass.

    A 1-d native int64 ndarray (a slice of a permutation) is the hot case: ``asarray`` and
    ``astype`` would return it as it is and ``np.sort`` pays for a generic dispatch, so a
    copy sorted in place yields the same values, dtype, shape and flags (hence the same key)
    in a third of the time. Anything else takes the reference path, so the two cannot
    disagree on an input only one of them accepts.
    """
    if type(subset) is np.ndarray and subset.dtype is _INT64 and subset.ndim == 1:
        out = subset.copy()
        out.sort()
        out.flags.writeable = False
        return out
    return canonical_subset(subset)
