"""The content fingerprint of a pyDVL utility with its training data (the memoizer's
``signature``): utility class and settings, model class + ``get_params()`` of the unfitted
template, scorer definition and its test data, training arrays -- never ``id()``, ``hash()``
or a pickle, so an identical utility rebuilt in another process or on another machine has the
same fingerprint, and two datasets never do. Shared by ``CachedUtility`` and the pyDVL 0.10
``CacheBackend`` adapter, so both key a utility alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydvl.valuation.dataset import Dataset
from pydvl.valuation.utility.base import UtilityBase

from ..errors import ConfigError, KeyEncodingError
from ..keys import fingerprint

__all__ = ["utility_fingerprint"]

# Attributes that do not change what a utility computes: warnings, pyDVL's own cache, the
# wrapper it builds from them, and the training data (fingerprinted separately).
_UTILITY_SKIP = frozenset(
    {"show_warnings", "cache", "cached_func_options", "_utility_wrapper", "_training_data"}
)
# Labels of a dataset or scorer: renaming a column or a scorer must not invalidate values.
_DATASET_SKIP = frozenset(
    {"feature_names", "target_names", "description", "_data_names", "_group_names"}
)
_SCORER_SKIP = frozenset({"name"})
_MAX_DEPTH = 8


def _qualname(obj: Any) -> str:
    t = obj if isinstance(obj, type) else type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _describe(obj: Any, where: str, depth: int, skip: frozenset[str] = frozenset()) -> Any:
    """A canonically encodable stand-in for ``obj``: its fingerprint if expcache can encode
    it, else its class and (recursively) its attributes. Runs once per ``with_dataset()``."""
    if isinstance(obj, Dataset):
        skip = _DATASET_SKIP
    elif isinstance(obj, np.random.RandomState):
        return ("RandomState", obj.get_state(legacy=False))
    elif isinstance(obj, np.random.Generator):
        return ("Generator", obj.bit_generator.state)
    else:
        try:
            return fingerprint(obj, name=where)
        except KeyEncodingError:
            pass
    state = getattr(obj, "__dict__", None)
    if state is None or depth >= _MAX_DEPTH:
        raise KeyEncodingError(
            f"cannot fingerprint the utility: {_qualname(obj)} at {where} has no canonical "
            f"encoding; give its class a __cache_key__() method, or pass signature=<bytes> "
            f"(the identity of model and scorer; the data is still fingerprinted)"
        )
    return (
        _qualname(obj),
        tuple(
            (k, _describe(v, f"{where}.{k}", depth + 1))
            for k, v in sorted(state.items())
            if k not in skip
        ),
    )


def utility_fingerprint(utility: UtilityBase[Any], signature: bytes | None = None) -> bytes:
    """16-byte content fingerprint of ``utility`` together with its training data.

    ``signature`` replaces the description of the utility itself (model, scorer, settings)
    for objects expcache cannot encode; the training data is fingerprinted either way.
    """
    data = utility.training_data
    if data is None:
        raise ConfigError(
            f"{_qualname(utility)} has no training data: pass a utility that went through "
            f"with_dataset(data), or let the valuation method's fit(data) bind it"
        )
    if signature is not None:
        if not isinstance(signature, bytes):
            raise ConfigError(f"signature={signature!r}: must be bytes")
        what: Any = ("signature", signature)
    else:
        what = _describe(utility, "utility", 0, _UTILITY_SKIP)
    train = _describe(data, "utility.training_data", 0)
    return fingerprint(("expcache.pydvl/1", what, train), name="utility")
