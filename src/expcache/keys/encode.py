"""Canonical value encoding: every value -> a self-delimiting byte stream (see ``tags``).

A key must change whenever a result could change and must *not* change across processes,
machines or ``PYTHONHASHSEED`` values, so nothing here uses ``hash()``, ``id()`` or pickle
(whose bytes depend on history, not on value) unless the user opted into pickle. Containers
whose iteration order is not part of their value (dict, set) are written in a sorted order;
OrderedDict keeps its order because it is part of its value.

This module holds the core: scalars and containers, the dispatch table (``DISPATCH``, exact
type -> encoder) and, for every other type, one resolution per type cached in a
``WeakKeyDictionary`` (a class defined in a loop is not kept alive). The other modules plug
in: ``objects`` (instances, the resolution order, ``register_encoder``), ``numeric`` (numpy,
pandas), ``identity`` (functions, and classes as references through ``hooks``). Reference
cycles and absurd nesting surface as ``RecursionError``; the caller reports them (no
per-container bookkeeping on the hit path).
"""

from __future__ import annotations

import array
import datetime as dt
import decimal
import fractions
import pathlib
import pickle
import re
import reprlib
import struct
import sys
import types
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import xxhash

from . import tags as T

__all__ = [
    "DISPATCH",
    "Ctx",
    "Unencodable",
    "Walk",
    "digest",
    "encode",
    "encode_at",
    "encode_other",
    "fallback",
    "hooks",
    "qualname",
    "s",
]

H: Callable[[Any], bytes] = xxhash.xxh3_128_digest
Q = struct.Struct("<Q").pack
_q = struct.Struct("<q").pack
_D = struct.Struct("<d").pack
_NAN = _D(float("nan"))  # every NaN (any sign or payload) is written as this one

_BIG_ENDIAN = sys.byteorder == "big"
Enc = Callable[[Any, list[bytes], "Ctx"], None]


class Unencodable(Exception):
    """Internal: the offending object's type, where it sat, and why -- for one clear message.

    ``path`` collects container segments innermost first; ``where`` names the variable
    (``global X of f()``) once identity reaches one, after which the path stops growing.
    """

    def __init__(self, obj: Any, reason: str = "has no canonical encoding") -> None:
        super().__init__(reason)
        self.type_name = qualname(type(obj))
        self.reason = reason
        self.path: list[str] = []
        self.where: str | None = None


class Walk:
    """The functions and classes whose identity is being computed (see ``identity``).

    ``frames``: id -> depth of the open ones; ``low``: per open frame, the shallowest frame it
    referred back to; ``open``: visited nodes not yet assigned to a cycle (Tarjan's stack);
    ``cycle``: ids written by name only (the members of a cycle being made canonical).
    """

    __slots__ = ("cycle", "frames", "low", "open")

    def __init__(self, cycle: frozenset[int] | None = None) -> None:
        self.frames: dict[int, int] = {}
        self.low: list[int] = []
        self.open: list[Any] = []
        self.cycle = cycle


class Ctx:
    """What an encoding pass needs besides the value.

    ``pickle``: whether objects without a canonical encoding are keyed by their pickle.
    ``pickled``: None, or a list that records each pickled object (warn mode, class caching).
    ``state``: a ``Walk`` while functions and classes are followed. A context without one is
    immutable and shared by every call of a KeyMaker.
    """

    __slots__ = ("pickle", "pickled", "state")

    def __init__(
        self, pickle: bool, pickled: list[str] | None = None, state: Walk | None = None
    ) -> None:
        self.pickle = pickle
        self.pickled = pickled
        self.state = state

    def walk(self, cycle: frozenset[int] | None = None) -> Ctx:
        """A context that follows functions and classes (this one, if it already does);
        with ``cycle``, always a fresh walk."""
        if self.state is not None and cycle is None:
            return self
        return Ctx(self.pickle, self.pickled if self.pickled is not None else [], Walk(cycle))

    def strict(self) -> Ctx:
        """The same walk with pickling off: first try at a closure variable or global."""
        return self if not self.pickle else Ctx(False, self.pickled, self.state)


class _Hooks:
    """Filled in by ``identity`` at import: how classes and callables are written."""

    def __init__(self) -> None:
        self.class_ref: Callable[[type, Ctx], bytes] = lambda t, ctx: T.TYPE_NAME + s(qualname(t))
        self.callable: Callable[[Any, list[bytes], Ctx], bool] = lambda obj, out, ctx: False
        self.resolve: Callable[[type], Enc] = lambda t: _unknown  # objects.py: the real one


hooks = _Hooks()


def module_name(name: Any) -> str:
    """A module name as it enters keys: multiprocessing's spawn/forkserver workers import the
    main script as ``__mp_main__``; it is the same code as ``__main__``."""
    return "__main__" if name == "__mp_main__" else str(name)


def qualname(obj: Any) -> str:
    return f"{module_name(getattr(obj, '__module__', None))}.{getattr(obj, '__qualname__', '?')}"


def s(text: str) -> bytes:
    b = text.encode("utf-8", "surrogatepass")
    return Q(len(b)) + b


def encode(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    enc = DISPATCH.get(type(obj))
    if enc is None:
        encode_other(obj, out, ctx)
    else:
        enc(obj, out, ctx)


def encode_at(obj: Any, out: list[bytes], ctx: Ctx, segment: str) -> None:
    try:
        encode(obj, out, ctx)
    except Unencodable as exc:
        if exc.where is None:
            exc.path.append(segment)
        raise


def digest(obj: Any, ctx: Ctx) -> bytes:
    sub: list[bytes] = []
    encode(obj, sub, ctx)
    return H(b"".join(sub))


def fallback(obj: Any, out: list[bytes], ctx: Ctx, reason: str) -> None:
    """No canonical encoding: the pickle's digest when the user allowed it, else an error."""
    if not ctx.pickle:
        raise Unencodable(obj, reason)
    try:
        b = pickle.dumps(obj, protocol=4)
    except Exception as exc:
        raise Unencodable(obj, f"{reason} and cannot be pickled ({exc})") from None
    if ctx.pickled is not None:
        ctx.pickled.append(qualname(type(obj)))
    out.append(T.PICKLED + H(b))


# ---------------------------------------------------------------- scalars and containers
def _enc_int(x: int, out: list[bytes], ctx: Ctx) -> None:
    if -(1 << 63) <= x < 1 << 63:
        out.append(T.INT + _q(x))
    else:
        b = int(x).to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        out.append(T.BIGINT + Q(len(b)) + b)


def _f(x: float) -> bytes:
    return _D(x) if x == x else _NAN


def _enc_float(x: float, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.FLOAT + (_D(x) if x == x else _NAN))


def _enc_complex(x: complex, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.COMPLEX + _f(x.real) + _f(x.imag))


def _enc_str(x: str, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.STR + s(x))


def _bytes_enc(tag: bytes) -> Enc:
    def enc(x: Any, out: list[bytes], ctx: Ctx) -> None:
        b = bytes(x)
        out.append(tag + Q(len(b)) + b)

    return enc


def _enc_memoryview(x: memoryview, out: list[bytes], ctx: Ctx) -> None:
    b = x.tobytes()
    out.append(T.MEMORYVIEW + s(x.format) + Q(x.ndim) + b"".join(Q(n) for n in x.shape or ()))
    out.append(Q(len(b)) + b)


def _seq_enc(tag: bytes) -> Enc:
    def enc(x: Any, out: list[bytes], ctx: Ctx) -> None:
        out.append(tag + Q(len(x)))
        i = 0
        try:
            for i, item in enumerate(x):  # noqa: B007 - i is read by the except clause
                e = DISPATCH.get(type(item))
                if e is None:
                    encode_other(item, out, ctx)
                else:
                    e(item, out, ctx)
        except Unencodable as exc:
            if exc.where is None:
                exc.path.append(f"[{i}]")
            raise

    return enc


_STR_TYPES = frozenset({str, np.str_})


def _enc_dict(x: Any, out: list[bytes], ctx: Ctx) -> None:
    if all(type(k) in _STR_TYPES for k in x):  # the common case: sort by key, no digests
        out.append(T.STR_KEY_DICT + Q(len(x)))
        for k in sorted(x):
            out.append(s(k))
            encode_at(x[k], out, ctx, f"[{k!r}]")
        return
    entries = []
    for k, v in x.items():
        try:
            entries.append(digest(k, ctx) + digest(v, ctx))
        except Unencodable as exc:
            if exc.where is None:
                exc.path.append(f"[{reprlib.repr(k)}]")
            raise
    entries.sort()
    out.append(T.DICT + Q(len(entries)) + b"".join(entries))


def _enc_ordered_dict(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.ORDERED_DICT + Q(len(x)))
    for k, v in x.items():
        encode_at(k, out, ctx, f"[{reprlib.repr(k)}] (key)")
        encode_at(v, out, ctx, f"[{reprlib.repr(k)}]")


_INT_ONLY = frozenset({int})
_INTEGERS = frozenset({int, *(t for t in np.sctypeDict.values() if issubclass(t, np.integer))})


def _ints(items: Any) -> bytes | None:
    """Sorted items as 8-byte ints, or None when one does not fit (then digests are used)."""
    try:
        a = array.array("q", sorted(items))
    except OverflowError:
        return None
    if _BIG_ENDIAN:
        a.byteswap()
    return a.tobytes()


def _set_enc(tag: bytes, int_tag: bytes) -> Enc:
    def enc(x: Any, out: list[bytes], ctx: Ctx) -> None:
        kinds = set(map(type, x))
        packed = None
        if kinds <= _INT_ONLY:  # sets of ints (subsets of indices): the common case
            packed = _ints(x)
        elif kinds <= _INTEGERS:
            packed = _ints(map(int, x))  # numpy integers key like ints, here too
        if packed is not None:
            out.append(int_tag + Q(len(x)) + packed)
            return
        items = sorted(digest(item, ctx) for item in x)
        out.append(tag + Q(len(items)) + b"".join(items))

    return enc


def _enc_range(x: range, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.RANGE)
    for n in (x.start, x.stop, x.step):
        _enc_int(n, out, ctx)


def _enc_slice(x: slice, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.SLICE)
    encode((x.start, x.stop, x.step), out, ctx)


def _enc_fraction(x: fractions.Fraction, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.FRACTION)
    _enc_int(x.numerator, out, ctx)
    _enc_int(x.denominator, out, ctx)


def _tz(tz: dt.tzinfo | None) -> bytes:
    return T.NONE if tz is None else T.TZINFO + s(qualname(type(tz))) + s(str(tz))


def _enc_datetime(x: dt.datetime | dt.time, out: list[bytes], ctx: Ctx) -> None:
    tag = T.DATETIME if isinstance(x, dt.datetime) else T.TIME
    out.append(tag + s(x.isoformat()) + bytes([x.fold]) + _tz(x.tzinfo))


def _enc_pattern(x: re.Pattern[Any], out: list[bytes], ctx: Ctx) -> None:
    out.append(T.PATTERN)
    encode(x.pattern, out, ctx)
    _enc_int(x.flags, out, ctx)


def _const(tag: bytes) -> Enc:
    return lambda x, out, ctx: out.append(tag)


def _tagged(tag: bytes, text: Callable[[Any], str]) -> Enc:
    return lambda x, out, ctx: out.append(tag + s(text(x)))


_RESOLVED: weakref.WeakKeyDictionary[type, Enc] = weakref.WeakKeyDictionary()
# Keyed by weakref.ref(type): reading the dict itself skips a Python-level call per value.
_resolved_get: Callable[[Any], Enc | None] = _RESOLVED.data.get  # type: ignore[attr-defined]
_ref = weakref.ref


def _unknown(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    fallback(obj, out, ctx, "has no canonical encoding")


def encode_other(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    t = type(obj)
    enc = _resolved_get(_ref(t))
    if enc is None:
        enc = _RESOLVED[t] = hooks.resolve(t)
    enc(obj, out, ctx)


_enc_tuple = _seq_enc(T.TUPLE)
_enc_list = _seq_enc(T.LIST)
DISPATCH: dict[type, Enc] = {
    type(None): _const(T.NONE),
    bool: lambda x, out, ctx: out.append(T.TRUE if x else T.FALSE),
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _bytes_enc(T.BYTES),
    bytearray: _bytes_enc(T.BYTEARRAY),
    memoryview: _enc_memoryview,
    tuple: _enc_tuple,
    list: _enc_list,
    dict: _enc_dict,
    OrderedDict: _enc_ordered_dict,
    set: _set_enc(T.SET, T.INT_SET),
    frozenset: _set_enc(T.FROZENSET, T.INT_FROZENSET),
    type(...): _const(T.ELLIPSIS),
    type(NotImplemented): _const(T.NOT_IMPLEMENTED),
    types.ModuleType: _tagged(T.MODULE, lambda m: module_name(m.__name__)),
    range: _enc_range,
    slice: _enc_slice,
    dt.date: _tagged(T.DATE, dt.date.isoformat),
    dt.datetime: _enc_datetime,
    dt.time: _enc_datetime,
    dt.timedelta: lambda x, out, ctx: out.append(
        T.TIMEDELTA + _q(x.days) + _q(x.seconds) + _q(x.microseconds)
    ),
    decimal.Decimal: _tagged(T.DECIMAL, str),
    fractions.Fraction: _enc_fraction,
    uuid.UUID: lambda x, out, ctx: out.append(T.UUID + x.bytes),
    re.Pattern: _enc_pattern,
}
for _p in (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath):
    DISPATCH[_p] = lambda x, out, ctx: out.append(T.PATH + s(type(x).__name__) + s(str(x)))
