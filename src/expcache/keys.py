"""Cache keys: function identity + canonical argument encoding -> a memcached-safe string.

A key must change whenever the result could change and must *not* change across processes,
machines or ``PYTHONHASHSEED`` values, so nothing here uses ``hash()``, ``id()`` (except for
in-process cycle detection) or pickle (whose bytes depend on history, not on value). Every value
is written as a type tag followed by a fixed-size or length-prefixed payload, so the byte stream
is self-delimiting and two different values cannot produce the same stream. Containers whose
iteration order is not part of their value (dict, set) are encoded as a sorted list of
per-entry digests.

The hash is xxh3-128: keys are not a security boundary (stored entries are authenticated by the
serde HMAC), and hashing arrays of hundreds of MB at ~20-30 GB/s instead of blake2b's ~1 GB/s is
what makes keying large numpy arguments cheap. 128 bits keep accidental collisions negligible.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import functools
import inspect
import os
import pathlib
import pickle
import re
import reprlib
import struct
import sys
import sysconfig
import types
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import xxhash

from .errors import ConfigError, KeyEncodingError

__all__ = ["KEY_FORMAT_VERSION", "KeyMaker", "fingerprint", "function_identity"]

# 1 was the pickle-based placeholder; bump on *any* change of the byte stream below.
KEY_FORMAT_VERSION = 2
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{0,64}")

_H: Callable[[Any], bytes] = xxhash.xxh3_128_digest
_Q = struct.Struct("<Q").pack
_q = struct.Struct("<q").pack
_D = struct.Struct("<d").pack
_NAN = _D(float("nan"))  # every NaN (any sign or payload) is written as this one
_PTR = struct.calcsize("P")
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: every Python class (and some C types) has it
_MISSING: Any = object()
_ARG_HINT = (
    "give its class a __cache_key__() method, make it a dataclass, list the parameter in "
    "ignore_args, or pass pickle_fallback=True"
)
_FN_HINT = "give it a __cache_key__() method or pass signature= (or version=) explicitly"


def _lib_prefixes() -> tuple[str, ...]:
    """Code installed here is identified by name only: its bytecode is pinned by the
    environment, and walking it would make keys expensive and tie them to library internals."""
    paths = sysconfig.get_paths()
    found = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    found |= {os.path.realpath(p) for p in found}
    return (*sorted(p.rstrip(os.sep) + os.sep for p in found), "<frozen")


_LIB_PREFIXES = _lib_prefixes()


class _Unencodable(Exception):
    """Internal: carries the offending object's type and where it sat, for one clear message."""

    def __init__(self, obj: Any, reason: str = "has no canonical encoding") -> None:
        super().__init__(reason)
        self.type_name = _qualname(type(obj))
        self.reason = reason
        self.path: list[str] = []  # innermost first; reversed when formatted


class _Ctx:
    __slots__ = ("active", "pickle_fallback")

    def __init__(self, pickle_fallback: bool) -> None:
        self.pickle_fallback = pickle_fallback
        self.active: set[int] = set()  # ids of containers being encoded: cycle detection only


_Enc = Callable[[Any, list[bytes], _Ctx], None]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', '?')}"


def _s(text: str) -> bytes:
    b = text.encode("utf-8", "surrogatepass")
    return _Q(len(b)) + b


def _fail(exc: _Unencodable, name: str, context: str, hint: str) -> KeyEncodingError:
    path = "".join(reversed(exc.path))
    at = f" at {name}{path}" if path else ""
    return KeyEncodingError(
        f"cannot build a cache key for {context}: {exc.type_name} object{at} {exc.reason}; {hint}"
    )


def _encode(obj: Any, out: list[bytes], ctx: _Ctx) -> None:
    enc = _DISPATCH.get(type(obj))
    if enc is None:
        _encode_other(obj, out, ctx)
    else:
        enc(obj, out, ctx)


def _digest(obj: Any, ctx: _Ctx) -> bytes:
    sub: list[bytes] = []
    _encode(obj, sub, ctx)
    return _H(b"".join(sub))


def _enter(obj: Any, ctx: _Ctx) -> int:
    key = id(obj)
    if key in ctx.active:
        raise _Unencodable(obj, "contains itself (reference cycle)")
    ctx.active.add(key)
    return key


# ---------------------------------------------------------------- scalars and containers
def _enc_int(x: int, out: list[bytes], ctx: _Ctx) -> None:
    if -(1 << 63) <= x < 1 << 63:
        out.append(b"i" + _q(x))
    else:
        b = int(x).to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        out.append(b"I" + _Q(len(b)) + b)


def _f(x: float) -> bytes:
    return _D(x) if x == x else _NAN


def _enc_float(x: float, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"f" + (_D(x) if x == x else _NAN))


def _enc_complex(x: complex, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"c" + _f(x.real) + _f(x.imag))


def _enc_str(x: str, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"s" + _s(x))


def _bytes_enc(tag: bytes) -> _Enc:
    def enc(x: Any, out: list[bytes], ctx: _Ctx) -> None:
        b = bytes(x)
        out.append(tag + _Q(len(b)) + b)

    return enc


def _enc_memoryview(x: memoryview, out: list[bytes], ctx: _Ctx) -> None:
    b = x.tobytes()
    out.append(b"m" + _s(x.format) + _Q(x.ndim) + b"".join(_Q(n) for n in x.shape or ()))
    out.append(_Q(len(b)) + b)


def _seq_enc(tag: bytes) -> _Enc:
    def enc(x: Any, out: list[bytes], ctx: _Ctx) -> None:
        key = _enter(x, ctx)
        out.append(tag + _Q(len(x)))
        i = 0
        try:
            for i, item in enumerate(x):  # noqa: B007 - i is read by the except clause
                e = _DISPATCH.get(type(item))
                if e is None:
                    _encode_other(item, out, ctx)
                else:
                    e(item, out, ctx)
        except _Unencodable as exc:
            exc.path.append(f"[{i}]")
            raise
        finally:
            ctx.active.discard(key)

    return enc


def _enc_dict(x: Mapping[Any, Any], out: list[bytes], ctx: _Ctx) -> None:
    key = _enter(x, ctx)
    entries = []
    try:
        for k, v in x.items():
            try:
                entries.append(_digest(k, ctx) + _digest(v, ctx))
            except _Unencodable as exc:
                exc.path.append(f"[{reprlib.repr(k)}]")
                raise
    finally:
        ctx.active.discard(key)
    entries.sort()
    out.append(b"d" + _Q(len(entries)) + b"".join(entries))


def _set_enc(tag: bytes) -> _Enc:
    def enc(x: Any, out: list[bytes], ctx: _Ctx) -> None:
        items = sorted(_digest(item, ctx) for item in x)
        out.append(tag + _Q(len(items)) + b"".join(items))

    return enc


# ---------------------------------------------------------------- numpy
_ARRAY_HEADS: dict[np.dtype[Any], bytes] = {}  # dtype -> header, for plain little-endian dtypes


def _enc_ndarray(a: np.ndarray[Any, Any], out: list[bytes], ctx: _Ctx) -> None:
    head = _ARRAY_HEADS.get(a.dtype)
    if head is None:
        dtype = a.dtype
        if dtype.hasobject or dtype.fields is not None or dtype.kind == "T":
            # Object/structured/StringDType buffers hold pointers or padding: go element-wise.
            spec = dtype.str if dtype.fields is None else repr(dtype.descr)
            out.append(b"O" + _s(spec) + _Q(a.ndim) + b"".join(_Q(n) for n in a.shape))
            key = _enter(a, ctx)
            try:
                _enc_list(a.ravel().tolist(), out, ctx)
            finally:
                ctx.active.discard(key)
            return
        if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
            raise _Unencodable(a, "is long double: its padding bytes are undefined; use float64")
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
            a = a.astype(dtype.newbyteorder("<"))  # one byte order: keys agree across machines
            dtype = a.dtype
        head = _ARRAY_HEADS.setdefault(dtype, b"A" + _s(dtype.str))
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)  # F-order and strided views hash like their C copy
    try:
        digest = _H(a)
    except (BufferError, TypeError, ValueError):  # dtypes without a buffer format
        digest = _H(a.reshape(-1).view(np.uint8))
    out.append(head + _Q(a.ndim) + b"".join(_Q(n) for n in a.shape) + digest)


def _enc_ndarray_sub(a: np.ndarray[Any, Any], out: list[bytes], ctx: _Ctx) -> None:
    if isinstance(a, np.ma.MaskedArray):
        mask = np.broadcast_to(np.asarray(a.mask, dtype=bool), a.shape)
        out.append(b"V")
        _enc_ndarray(np.where(mask, np.zeros((), a.dtype), a.data), out, ctx)
        _enc_ndarray(mask, out, ctx)
    elif isinstance(a, (np.memmap, np.matrix)):
        out.append(b"H" + _s(_qualname(type(a))))
        _enc_ndarray(np.asarray(a), out, ctx)
    else:  # unknown subclasses may carry state outside the buffer (units, metadata)
        raise _Unencodable(a, "is an ndarray subclass with possible extra state")


def _numpy_scalar_encoder(t: type) -> _Enc:
    """Scalars of the types Python itself has key like the Python value; others keep dtype."""
    if issubclass(t, np.bool_):
        return lambda x, out, ctx: out.append(b"1" if x else b"0")
    if issubclass(t, np.integer):
        return lambda x, out, ctx: _enc_int(int(x), out, ctx)
    for np_t, py_t in (
        (np.float64, float),
        (np.complex128, complex),
        (np.str_, str),
        (np.bytes_, bytes),
    ):
        if issubclass(t, np_t):
            return _DISPATCH[py_t]

    def other(x: Any, out: list[bytes], ctx: _Ctx) -> None:  # float32, datetime64, ...
        out.append(b"n")
        _enc_ndarray(np.asarray(x), out, ctx)

    return other


# ---------------------------------------------------------------- code and callables
def _enc_code(code: types.CodeType, out: list[bytes], ctx: _Ctx) -> None:
    flags = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    out.append(b"C" + b"".join(_Q(n) for n in flags) + _Q(len(code.co_code)) + code.co_code)
    for part in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        _enc_tuple(part, out, ctx)
    _enc_tuple(code.co_consts, out, ctx)  # nested code objects recurse via the dispatch table


def _global_names(code: types.CodeType) -> list[str]:
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return sorted(names)


def _enc_function(fn: types.FunctionType, out: list[bytes], ctx: _Ctx, full: bool) -> None:
    name = _s(_qualname(fn))
    if not full and fn.__code__.co_filename.startswith(_LIB_PREFIXES):
        out.append(b"B" + name)
        return
    if id(fn) in ctx.active:  # recursion (direct or mutual): a back-reference by name
        out.append(b"R" + name)
        return
    key = _enter(fn, ctx)
    try:
        out.append(b"F" + name)
        _enc_code(fn.__code__, out, ctx)
        for label, value in (("defaults", fn.__defaults__), ("kwdefaults", fn.__kwdefaults__)):
            try:
                _encode(value, out, ctx)
            except _Unencodable as exc:
                exc.path.append(f".__{label}__")
                raise
        cells = fn.__closure__ or ()
        out.append(_Q(len(cells)))
        for var, cell in zip(fn.__code__.co_freevars, cells, strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # cell not assigned yet
                out.append(b"-")
                continue
            try:
                _encode(contents, out, ctx)
            except _Unencodable as exc:
                exc.path.append(f".<closure {var}>")
                raise
        g = fn.__globals__
        names = [n for n in _global_names(fn.__code__) if n in g or hasattr(builtins, n)]
        out.append(_Q(len(names)))
        for n in names:
            if n not in g:
                out.append(b"^" + _s(n))
                continue
            out.append(b"g" + _s(n))
            value = g[n]
            if isinstance(value, types.FunctionType):
                _enc_function(value, out, ctx, full=False)
                continue
            sub: list[bytes] = []
            try:
                _encode(value, sub, ctx)
                out.extend(sub)
            except _Unencodable:  # loggers, locks, clients...: documented as type-only
                out.append(b"o" + _s(_qualname(type(value))))
    finally:
        ctx.active.discard(key)


def _c_callable_name(obj: Any) -> str | None:
    """Name of a C-implemented callable (builtins, ufuncs, numpy dispatchers, descriptors)."""
    if isinstance(obj, np.ufunc):
        return f"ufunc:{obj.__name__}:{','.join(obj.types)}"
    if type(obj).__flags__ & _HEAPTYPE and getattr(obj, "__dict__", None):
        return None  # a Python object (e.g. a decorator) that copied its function's name
    qn = getattr(obj, "__qualname__", None)
    if not isinstance(qn, str) or not callable(obj):
        return None
    owner = getattr(obj, "__objclass__", None) or getattr(obj, "__self__", None)
    mod = getattr(obj, "__module__", None) or getattr(owner, "__module__", None)
    return f"{mod}.{qn}"


def _enc_callable(fn: Any, out: list[bytes], ctx: _Ctx, full: bool) -> bool:
    if isinstance(fn, types.FunctionType):
        _enc_function(fn, out, ctx, full)
    elif isinstance(fn, types.MethodType):
        out.append(b"b")
        if not _enc_callable(fn.__func__, out, ctx, full):
            _encode(fn.__func__, out, ctx)
        _encode_at(fn.__self__, out, ctx, ".__self__")
    elif isinstance(fn, functools.partial):
        out.append(b"P")
        if not _enc_callable(fn.func, out, ctx, full):
            _encode(fn.func, out, ctx)
        _encode_at(fn.args, out, ctx, ".args")
        _encode_at(fn.keywords, out, ctx, ".keywords")
    elif (name := _c_callable_name(fn)) is not None:
        out.append(b"B" + _s(name))
        owner = getattr(fn, "__self__", None)
        if owner is not None and not isinstance(owner, (types.ModuleType, type)):
            _encode_at(owner, out, ctx, ".__self__")  # e.g. a bound method of a C object
    else:
        return False
    return True


def _encode_at(obj: Any, out: list[bytes], ctx: _Ctx, segment: str) -> None:
    try:
        _encode(obj, out, ctx)
    except _Unencodable as exc:
        exc.path.append(segment)
        raise


# ---------------------------------------------------------------- everything else
def _is_stateless(obj: Any) -> bool:
    """An instance with no attributes and no C-level fields (its layout is object's plus at
    most the dict/weakref pointers) is fully described by its class, like an enum member.
    Checking the layout, not how the class was defined, is what rules out locks and files."""
    t = type(obj)
    extra = t.__basicsize__ - object.__basicsize__
    extra -= _PTR * ((t.__weakrefoffset__ > 0) + (t.__dictoffset__ > 0))
    return extra == 0 and not getattr(obj, "__dict__", None)


def _enc_pandas(obj: Any, out: list[bytes], ctx: _Ctx, pd: Any) -> bool:
    """Only reached when the user already imported pandas; we never import it ourselves."""

    def values(x: Any) -> None:
        out.append(_s(str(x.dtype)))
        cats = getattr(x.dtype, "categories", None)
        if cats is not None:
            _encode((cats.to_numpy(), bool(x.dtype.ordered)), out, ctx)
        _encode(x.to_numpy(), out, ctx)

    if isinstance(obj, pd.DataFrame):
        out.append(b"Q" + _Q(obj.shape[1]))
        _encode_at(obj.columns, out, ctx, ".columns")
        _encode_at(obj.index, out, ctx, ".index")
        for i in range(obj.shape[1]):
            values(obj.iloc[:, i])
    elif isinstance(obj, pd.Series):
        out.append(b"q")
        _encode_at((obj.name, obj.index), out, ctx, ".index")
        values(obj)
    elif isinstance(obj, pd.Index):
        out.append(b"j")
        _encode(list(obj.names), out, ctx)
        values(obj)
    elif obj is pd.NaT or obj is pd.NA:
        out.append(b"L" + _s(repr(obj)))
    elif isinstance(obj, (pd.Timestamp, pd.Timedelta)):
        tz = str(getattr(obj, "tz", None))
        out.append(b"J" + _s(_qualname(type(obj))) + _s(obj.isoformat()) + _s(tz))
    else:
        return False
    return True


_BUILTIN_BASES = (tuple, list, dict, set, frozenset, str, bytes, int, float, complex)


def _encode_other(obj: Any, out: list[bytes], ctx: _Ctx) -> None:
    t = type(obj)
    if getattr(t, "__cache_key__", None) is not None:
        key = _enter(obj, ctx)
        try:
            out.append(b"k" + _s(_qualname(t)))
            _encode_at(obj.__cache_key__(), out, ctx, ".__cache_key__()")
        finally:
            ctx.active.discard(key)
    elif isinstance(obj, type):
        out.append(b"T" + _s(_qualname(obj)))
    elif isinstance(obj, enum.Enum):
        out.append(b"u" + _s(_qualname(t)) + _s(obj.name))
    elif isinstance(obj, np.generic):
        enc = _DISPATCH[t] = _numpy_scalar_encoder(t)
        enc(obj, out, ctx)
    elif isinstance(obj, np.ndarray):
        _enc_ndarray_sub(obj, out, ctx)
    elif (pd := sys.modules.get("pandas")) is not None and _enc_pandas(obj, out, ctx, pd):
        pass
    elif dataclasses.is_dataclass(obj):
        key = _enter(obj, ctx)
        try:
            fields = dataclasses.fields(obj)
            out.append(b"D" + _s(_qualname(t)) + _Q(len(fields)))
            for f in fields:
                out.append(_s(f.name))
                _encode_at(getattr(obj, f.name), out, ctx, f".{f.name}")
        finally:
            ctx.active.discard(key)
    elif _enc_callable(obj, out, ctx, full=False):
        pass
    elif callable(getattr(obj, "get_params", None)) and callable(getattr(obj, "fit", None)):
        state = getattr(obj, "__dict__", {})
        fitted = sorted(k for k in state if k.endswith("_") and not k.startswith("_"))
        if fitted:
            _fallback(obj, out, ctx, f"is a fitted estimator ({fitted[0]!r} is not in get_params)")
            return
        key = _enter(obj, ctx)
        try:
            out.append(b"K" + _s(_qualname(t)))
            _encode_at(obj.get_params(deep=False), out, ctx, ".get_params()")
        finally:
            ctx.active.discard(key)
    elif isinstance(obj, _BUILTIN_BASES) and not getattr(obj, "__dict__", None):
        base = next(b for b in t.__mro__ if b in _BUILTIN_BASES)
        out.append(b"Z" + _s(_qualname(t)))
        _DISPATCH[base](obj, out, ctx)
        if isinstance(obj, defaultdict):
            _encode_at(obj.default_factory, out, ctx, ".default_factory")
    elif isinstance(obj, pathlib.PurePath):
        out.append(b"p" + _s(t.__name__) + _s(str(obj)))
    elif callable(obj) and hasattr(obj, "__wrapped__"):
        out.append(b"W")  # a decorator object (e.g. a memoized function): what it wraps
        _encode_at(obj.__wrapped__, out, ctx, ".__wrapped__")
    elif _is_stateless(obj):
        out.append(b"S" + _s(_qualname(t)))
    else:
        _fallback(obj, out, ctx, "has no canonical encoding")


def _fallback(obj: Any, out: list[bytes], ctx: _Ctx, reason: str) -> None:
    if not ctx.pickle_fallback:
        raise _Unencodable(obj, reason)
    try:
        b = pickle.dumps(obj, protocol=4)
    except Exception as exc:
        raise _Unencodable(obj, f"{reason} and cannot be pickled ({exc})") from None
    out.append(b"x" + _Q(len(b)) + b)


def _tz(tz: dt.tzinfo | None) -> bytes:
    return b"-" if tz is None else b"+" + _s(_qualname(type(tz))) + _s(str(tz))


def _enc_range(x: range, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"r")
    for n in (x.start, x.stop, x.step):
        _enc_int(n, out, ctx)


def _enc_slice(x: slice, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"z")
    _encode((x.start, x.stop, x.step), out, ctx)


def _enc_fraction(x: fractions.Fraction, out: list[bytes], ctx: _Ctx) -> None:
    out.append(b"v")
    _enc_int(x.numerator, out, ctx)
    _enc_int(x.denominator, out, ctx)


def _const(tag: bytes) -> _Enc:
    return lambda x, out, ctx: out.append(tag)


def _tagged(tag: bytes, text: Callable[[Any], str]) -> _Enc:
    return lambda x, out, ctx: out.append(tag + _s(text(x)))


_enc_tuple = _seq_enc(b"t")
_enc_list = _seq_enc(b"l")
_DISPATCH: dict[type, _Enc] = {
    type(None): _const(b"N"),
    bool: lambda x, out, ctx: out.append(b"1" if x else b"0"),
    int: _enc_int,
    float: _enc_float,
    complex: _enc_complex,
    str: _enc_str,
    bytes: _bytes_enc(b"y"),
    bytearray: _bytes_enc(b"Y"),
    memoryview: _enc_memoryview,
    tuple: _enc_tuple,
    list: _enc_list,
    dict: _enc_dict,
    set: _set_enc(b"e"),
    frozenset: _set_enc(b"E"),
    np.ndarray: _enc_ndarray,
    np.float64: _enc_float,
    type(...): _const(b"."),
    type(NotImplemented): _const(b"_"),
    type: lambda x, out, ctx: out.append(b"T" + _s(_qualname(x))),
    types.ModuleType: _tagged(b"M", lambda m: m.__name__),
    types.CodeType: _enc_code,
    types.FunctionType: lambda x, out, ctx: _enc_function(x, out, ctx, full=False),
    range: _enc_range,
    slice: _enc_slice,
    dt.date: _tagged(b"a", dt.date.isoformat),
    dt.datetime: lambda x, out, ctx: out.append(
        b"w" + _s(x.isoformat()) + bytes([x.fold]) + _tz(x.tzinfo)
    ),
    dt.time: lambda x, out, ctx: out.append(
        b"h" + _s(x.isoformat()) + bytes([x.fold]) + _tz(x.tzinfo)
    ),
    dt.timedelta: lambda x, out, ctx: out.append(
        b"g" + _q(x.days) + _q(x.seconds) + _q(x.microseconds)
    ),
    decimal.Decimal: _tagged(b"X", str),
    fractions.Fraction: _enc_fraction,
    uuid.UUID: lambda x, out, ctx: out.append(b"U" + x.bytes),
}
for _p in (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath):
    _DISPATCH[_p] = lambda x, out, ctx: out.append(b"p" + _s(type(x).__name__) + _s(str(x)))


# ---------------------------------------------------------------- public API
def fingerprint(obj: Any, *, name: str = "value", pickle_fallback: bool = False) -> bytes:
    """16-byte digest of the canonical encoding of ``obj``; ``name`` only labels errors."""
    out: list[bytes] = []
    try:
        _encode(obj, out, _Ctx(pickle_fallback))
    except _Unencodable as exc:
        raise _fail(exc, name, repr(name), _ARG_HINT) from None
    except RecursionError:
        raise KeyEncodingError(
            f"cannot build a cache key for {name!r}: nested too deeply"
        ) from None
    return _H(b"".join(out))


def _identity(fn: Any, out: list[bytes], ctx: _Ctx) -> None:
    if _enc_callable(fn, out, ctx, full=True):
        return
    t = type(fn)
    if isinstance(fn, type):
        out.append(b"T" + _s(_qualname(fn)))
    elif not callable(fn):
        raise _Unencodable(fn, "is not callable")
    elif getattr(t, "__cache_key__", None) is None and hasattr(fn, "__wrapped__"):
        out.append(b"W")
        _identity(fn.__wrapped__, out, ctx)
    else:  # a callable instance: the code of its __call__ and the data it carries
        out.append(b"I")
        _identity(t.__call__, out, ctx)
        _encode_at(fn, out, ctx, "")


def function_identity(fn: Callable[..., Any]) -> bytes:
    """16-byte digest of what makes ``fn`` compute what it computes (see the module README)."""
    out: list[bytes] = []
    what = _qualname(fn if hasattr(fn, "__qualname__") else type(fn))
    try:
        _identity(fn, out, _Ctx(pickle_fallback=False))
    except _Unencodable as exc:
        raise _fail(exc, "fn", f"function {what}", _FN_HINT) from None
    except RecursionError:
        raise KeyEncodingError(f"function {what}: nested too deeply; {_FN_HINT}") from None
    return _H(b"".join(out))


class KeyMaker:
    """Turns one call's ``(args, kwargs)`` into a key; prepared once per function.

    The signature is analysed here so a call only does a dict lookup per keyword and one
    encoder call per argument. The function identity is computed on first use, not here,
    because decorators run before the rest of the module (helpers, constants) is defined.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        ignore_args: Iterable[str] = (),
        signature: bytes | None = None,
        version: str | None = None,
        namespace: str = "",
        pickle_fallback: bool = False,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ConfigError(
                f"namespace={namespace!r}: use at most 64 characters from [A-Za-z0-9_.-]"
            )
        if signature is not None and not isinstance(signature, bytes):
            raise ConfigError(f"signature={signature!r}: must be bytes or None")
        if version is not None and not isinstance(version, str):
            raise ConfigError(f"version={version!r}: must be a string or None")
        self.fn = fn
        self.ignore_args = frozenset([ignore_args] if isinstance(ignore_args, str) else ignore_args)
        self.signature = signature
        self.version = version
        self.namespace = namespace
        self.pickle_fallback = pickle_fallback
        self._prefix = (
            f"{namespace}:ex{KEY_FORMAT_VERSION}:" if namespace else f"ex{KEY_FORMAT_VERSION}:"
        )
        self._identity: bytes | None = None
        self._qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # no introspectable signature: key the raw call
            self._bindable = False
            self._varargs: str | None = "*args"
            self._varkw: str | None = "**kwargs"
            params = []
        else:
            self._bindable = True
            self._varargs = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
            self._varkw = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
        P = inspect.Parameter
        slots = [p for p in params if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
        self._names = [p.name for p in slots]
        self._n_pos = sum(p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for p in slots)
        self._kw_index = {p.name: i for i, p in enumerate(slots) if p.kind != P.POSITIONAL_ONLY}
        self._defaults = [_MISSING if p.default is P.empty else p.default for p in slots]
        known = {p.name for p in params}
        unknown = self.ignore_args - known
        if unknown and (self._varkw is None or not self._bindable):
            raise ConfigError(
                f"ignore_args names {sorted(unknown)} that {self._qualname}() does not have; "
                f"its parameters are {[p.name for p in params]}"
            )
        # Names not among the parameters can only mean keys passed through **kwargs.
        self._kw_drop = unknown
        self._keep = [
            (i, b"a" + _s(n)) for i, n in enumerate(self._names) if n not in self.ignore_args
        ]

    @property
    def identity(self) -> bytes:
        """The function part of the key (16 bytes); ``signature``/``version`` fold in here."""
        if self._identity is None:
            if self.signature is not None:
                head = b"S" + _Q(len(self.signature)) + self.signature
            else:
                head = b"D" + function_identity(self.fn)
            salt = b"-" if self.version is None else b"v" + _s(self.version)
            self._identity = _H(head + salt)
        return self._identity

    def _bind(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[list[Any], tuple[Any, ...], dict[str, Any]]:
        if not self._bindable:
            return [], tuple(args), dict(kwargs)
        n_pos = self._n_pos
        if not kwargs and len(args) == n_pos == len(self._names):
            return list(args), (), {}  # every parameter given positionally: nothing to bind
        extra: tuple[Any, ...] = ()
        if len(args) > n_pos:
            if self._varargs is None:
                raise TypeError(
                    f"{self._qualname}() takes {n_pos} positional arguments but {len(args)} were given"
                )
            extra, args = args[n_pos:], args[:n_pos]
        values = [*args, *[_MISSING] * (len(self._names) - len(args))]
        extra_kw: dict[str, Any] = {}
        for k, v in kwargs.items():
            i = self._kw_index.get(k)
            if i is None:
                if self._varkw is None:
                    raise TypeError(f"{self._qualname}() got an unexpected keyword argument {k!r}")
                if k not in self._kw_drop:
                    extra_kw[k] = v
            elif values[i] is not _MISSING:
                raise TypeError(f"{self._qualname}() got multiple values for argument {k!r}")
            else:
                values[i] = v
        for i, v in enumerate(values):
            if v is _MISSING:
                if self._defaults[i] is _MISSING:
                    raise TypeError(
                        f"{self._qualname}() missing required argument {self._names[i]!r}"
                    )
                values[i] = self._defaults[i]
        return values, extra, extra_kw

    def digest(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """16-byte digest of identity + bound arguments (defaults applied, ignored ones dropped)."""
        values, extra, extra_kw = self._bind(args, kwargs)
        out = [self._identity or self.identity]
        ctx = _Ctx(self.pickle_fallback)
        where = ""
        try:
            for i, head in self._keep:
                where = self._names[i]
                out.append(head)
                v = values[i]
                enc = _DISPATCH.get(type(v))
                if enc is None:
                    _encode_other(v, out, ctx)
                else:
                    enc(v, out, ctx)
            if self._varargs is not None and self._varargs not in self.ignore_args:
                where = self._varargs
                out.append(b"*")
                _enc_tuple(extra, out, ctx)
            if self._varkw is not None and self._varkw not in self.ignore_args:
                where = self._varkw
                out.append(b"&")
                _enc_dict(extra_kw, out, ctx)
        except _Unencodable as exc:
            context = f"argument {where!r} of {self._qualname}()"
            raise _fail(exc, where, context, _ARG_HINT) from None
        except RecursionError:
            raise KeyEncodingError(f"argument {where!r}: nested too deeply") from None
        return _H(b"".join(out))

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        return self._prefix + self.digest(args, kwargs).hex()
