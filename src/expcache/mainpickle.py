"""Pickling a memoized function defined in a script's ``__main__``.

Where ``__main__`` is that script (multiprocessing spawn and forkserver re-run it as
``__mp_main__``), the copy is looked up by reference, like any module-level function. Where
it is not (joblib's loky workers, whose ``__main__`` is loky's own), the function travels by
value as a cloudpickle (joblib ships one), and the copy keys every call exactly as the
original does: keys name ``__mp_main__`` as ``__main__``.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import threading
from typing import Any

__all__ = ["import_global", "main_payload", "restore_main"]

_pickling = threading.local()


def import_global(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def main_payload(memo: Any) -> bytes | None:
    """A by-value copy of a ``__main__`` function, for processes whose ``__main__`` differs."""
    if getattr(_pickling, "active", False):
        return None  # the function refers to itself (recursion): the outer copy carries it
    cloudpickle: Any = None
    for name in ("cloudpickle", "joblib.externals.cloudpickle"):
        try:
            cloudpickle = importlib.import_module(name)
            break
        except ImportError:
            continue
    if cloudpickle is None:
        return None
    _pickling.active = True
    try:
        return bytes(cloudpickle.dumps((memo.fn, memo.backend, memo.options, memo.config)))
    except Exception:
        return None
    finally:
        _pickling.active = False


def restore_main(qualname: str, payload: bytes | None) -> Any:
    from .memoize import Memoized  # import cycle: memoize pickles through this module

    main = sys.modules.get("__main__")
    try:
        found = import_global(main.__name__ if main is not None else "__main__", qualname)
    except (AttributeError, ImportError):
        found = None
    if isinstance(found, Memoized):
        return found
    if payload is None:
        raise ImportError(
            f"cannot find the memoized function __main__.{qualname} in this process; define "
            "it in an importable module, or install cloudpickle to ship it by value"
        )
    fn, backend, options, config = pickle.loads(payload)
    memo: Memoized[Any, Any] = object.__new__(Memoized)
    memo._init(fn, backend, options)
    memo.config = config
    return memo


