"""The checks every constructor shares: one rule per option, written once, here.

Each returns the normalised value or raises ``ConfigError`` carrying ``param``, ``value`` and
``expected`` (see ``errors.ConfigError``). Constructors call these on their arguments; the
Hydra app derives its schemas from the constructors' signatures and relies on the same calls
for ranges, so no range is written twice.

``bool`` is rejected where a number is expected (``True`` is an ``int`` in Python, and a
YAML ``yes`` would otherwise become a timeout of one second), and so are NaN and infinities
unless a bound explicitly allows them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ConfigError

__all__ = ["boolean", "choice", "integer", "names", "number", "text"]


def _is_real(value: Any, kinds: str) -> bool:
    """A Python number of the kinds (``i`` int, ``f`` float), or a numpy scalar of them."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int) or ("f" in kinds and isinstance(value, float)):
        return True
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and getattr(dtype, "kind", "") in kinds


def _bounds(ge: float | None, gt: float | None, le: float | None) -> str:
    parts = []
    if ge is not None:
        parts.append(f">= {ge:g}")
    if gt is not None:
        parts.append(f"> {gt:g}")
    if le is not None:
        parts.append(f"<= {le:g}")
    return " and ".join(parts)


def number(
    param: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    unit: str = "",
    allow_none: bool = False,
    allow_inf: bool = False,
    hint: str | None = None,
) -> Any:
    """A real number within the bounds (``None`` passes through when ``allow_none``)."""
    what = f"a number{f' of {unit}' if unit else ''}"
    bounds = _bounds(ge, gt, le)
    expected = f"{what} {bounds}".strip() + (" or null" if allow_none else "")
    if value is None and allow_none:
        return None
    if not _is_real(value, "iuf"):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    x = float(value)
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    if (
        (ge is not None and not x >= ge)
        or (gt is not None and not x > gt)
        or (le is not None and not x <= le)
    ):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    return x


def integer(
    param: str,
    value: Any,
    *,
    ge: int | None = None,
    le: int | None = None,
    allow_none: bool = False,
    hint: str | None = None,
) -> Any:
    """A whole number within the bounds; ``2.0`` is not an integer (a YAML typo, likely)."""
    bounds = _bounds(ge, None, le)
    expected = f"an integer {bounds}".strip() + (" or null" if allow_none else "")
    if value is None and allow_none:
        return None
    if not _is_real(value, "iu"):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    n = int(value)
    if (ge is not None and n < ge) or (le is not None and n > le):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    return n


def boolean(param: str, value: Any, *, hint: str | None = None) -> bool:
    """``True`` or ``False`` only: ``"false"`` is truthy, so strings are refused."""
    if not isinstance(value, bool):
        raise ConfigError(param=param, value=value, expected="true or false", hint=hint)
    return value


def choice(param: str, value: Any, choices: Sequence[Any], *, hint: str | None = None) -> Any:
    """One of ``choices`` (compared with ``==``, so only hashable plain values)."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        ok = False
    else:
        ok = any(value == c and type(value) is type(c) for c in choices)
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(param=param, value=value, expected=f"one of {listed}", hint=hint)
    return value


def text(
    param: str,
    value: Any,
    *,
    pattern: str | None = None,
    describe: str | None = None,
    allow_none: bool = False,
    hint: str | None = None,
) -> Any:
    """A string, fully matching ``pattern`` when given (``describe`` says it in words)."""
    expected = describe or ("a string" if pattern is None else f"a string matching {pattern}")
    if allow_none:
        expected += " or null"
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
        raise ConfigError(param=param, value=value, expected=expected, hint=hint)
    return value


def names(param: str, value: Any, *, hint: str | None = None) -> tuple[str, ...]:
    """Parameter names: one string is one name (not its letters), else an iterable of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray)):
        items = tuple(value)
    else:
        raise ConfigError(
            param=param, value=value, expected="a name or a list of names", hint=hint
        )
    out = []
    for item in items:
        if not isinstance(item, str) or not item.isidentifier():
            raise ConfigError(
                param=param,
                value=value,
                expected="a name or a list of names (Python identifiers)",
                hint=hint,
            )
        out.append(item)
    return tuple(dict.fromkeys(out))
