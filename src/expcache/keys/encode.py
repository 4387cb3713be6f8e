"""Canonical value encoding: every value -> a self-delimiting byte stream (see ``tags``).

A key must change whenever a result could change and must *not* change across processes,
machines or ``PYTHONHASHSEED`` values, so nothing here uses ``hash()``, ``id()`` or pickle
(whose bytes depend on history, not on value) unless the user opted into pickle. Containers
whose iteration order is not part of their value (dict, set) are written in a sorted order;
OrderedDict keeps its order because it is part of its value.

Encoding is a dict lookup on the exact type (``DISPATCH``) and, for every other type, one
resolution per type cached in a ``WeakKeyDictionary`` (a class defined in a loop is not kept
alive). Classes and callables are written by ``identity`` (it installs itself into ``hooks``):
this module only knows that a class is written as a *reference*. Reference cycles and absurd
nesting surface as ``RecursionError``; the caller reports them (no per-container bookkeeping
on the hit path).
"""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import decimal
import enum
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
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import xxhash

from ..errors import ConfigError
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
    "register_encoder",
    "s",
]

H: Callable[[Any], bytes] = xxhash.xxh3_128_digest
Q = struct.Struct("<Q").pack
_q = struct.Struct("<q").pack
_D = struct.Struct("<d").pack
_NAN = _D(float("nan"))  # every NaN (any sign or payload) is written as this one
_PTR = struct.calcsize("P")
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


# ---------------------------------------------------------------- numpy
_ARRAY_HEADS: dict[np.dtype[Any], bytes] = {}  # dtype -> header, for plain little-endian dtypes


def _enc_ndarray(a: np.ndarray[Any, Any], out: list[bytes], ctx: Ctx) -> None:
    head = _ARRAY_HEADS.get(a.dtype)
    if head is None:
        dtype = a.dtype
        if dtype.hasobject or dtype.fields is not None or dtype.kind == "T":
            # Object/structured/StringDType buffers hold pointers or padding: go element-wise.
            spec = dtype.str if dtype.fields is None else repr(dtype.descr)
            out.append(T.OBJECT_ARRAY + s(spec) + Q(a.ndim) + b"".join(Q(n) for n in a.shape))
            _enc_list(a.ravel().tolist(), out, ctx)
            return
        if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
            raise Unencodable(a, "is long double: its padding bytes are undefined; use float64")
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and _BIG_ENDIAN):
            a = a.astype(dtype.newbyteorder("<"))  # one byte order: keys agree across machines
            dtype = a.dtype
        head = _ARRAY_HEADS.setdefault(dtype, T.ARRAY + s(dtype.str))
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)  # F-order and strided views hash like their C copy
    try:
        d = H(a)
    except (BufferError, TypeError, ValueError):  # dtypes without a buffer format
        d = H(a.reshape(-1).view(np.uint8))
    out.append(head + Q(a.ndim) + b"".join(Q(n) for n in a.shape) + d)


def _enc_ndarray_sub(a: np.ndarray[Any, Any], out: list[bytes], ctx: Ctx) -> None:
    if isinstance(a, np.ma.MaskedArray):
        mask = np.broadcast_to(np.asarray(a.mask, dtype=bool), a.shape)
        out.append(T.MASKED_ARRAY)
        _enc_ndarray(np.where(mask, np.zeros((), a.dtype), a.data), out, ctx)
        _enc_ndarray(mask, out, ctx)
    elif isinstance(a, (np.memmap, np.matrix)):
        out.append(T.NDARRAY_SUBCLASS + s(qualname(type(a))))
        _enc_ndarray(np.asarray(a), out, ctx)
    else:  # unknown subclasses may carry state outside the buffer (units, metadata)
        fallback(a, out, ctx, "is an ndarray subclass with possible extra state")


def _numpy_scalar_encoder(t: type) -> Enc:
    """Scalars of the types Python itself has key like the Python value; others keep dtype."""
    if issubclass(t, np.bool_):
        return lambda x, out, ctx: out.append(T.TRUE if x else T.FALSE)
    if issubclass(t, np.integer):
        return lambda x, out, ctx: _enc_int(int(x), out, ctx)
    for np_t, py_t in ((np.float64, float), (np.complex128, complex), (np.str_, str)):
        if issubclass(t, np_t):
            return DISPATCH[py_t]
    if issubclass(t, np.bytes_):
        return DISPATCH[bytes]

    def other(x: Any, out: list[bytes], ctx: Ctx) -> None:  # float32, datetime64, ...
        out.append(T.NUMPY_SCALAR)
        _enc_ndarray(np.asarray(x), out, ctx)

    return other


def _enc_seed_sequence(x: Any, out: list[bytes], ctx: Ctx) -> None:
    entropy = x.entropy
    if entropy is not None and not isinstance(entropy, int):
        entropy = tuple(int(e) for e in np.asarray(entropy).ravel())
    out.append(T.SEED_SEQUENCE)
    encode((entropy, tuple(int(k) for k in x.spawn_key), int(x.pool_size)), out, ctx)
    _enc_int(int(x.n_children_spawned), out, ctx)


def _enc_bit_generator(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.BIT_GENERATOR + s(qualname(type(x))))
    encode(x.state, out, ctx)
    seq = getattr(x, "seed_seq", None) or getattr(x, "_seed_seq", None)  # decides spawn()
    encode(seq if isinstance(seq, np.random.SeedSequence) else None, out, ctx)


def _enc_generator(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.GENERATOR + s(qualname(type(x))))
    _enc_bit_generator(x.bit_generator, out, ctx)


def _enc_random_state(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.RANDOM_STATE + s(qualname(type(x))))
    encode(x.get_state(legacy=False), out, ctx)


# ---------------------------------------------------------------- objects
def _enc_type(x: type, out: list[bytes], ctx: Ctx) -> None:
    out.append(hooks.class_ref(x, ctx))


def _enc_cache_key(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.CACHE_KEY + hooks.class_ref(type(obj), ctx))
    encode_at(obj.__cache_key__(), out, ctx, ".__cache_key__()")


def _enc_enum(obj: enum.Enum, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.ENUM + hooks.class_ref(type(obj), ctx))
    name = obj.name  # None for a composite flag before Python 3.11: then its value
    encode(obj.value if name is None else name, out, ctx)


def _dataclass_encoder(t: type) -> Enc:
    names = tuple(f.name for f in dataclasses.fields(t))
    heads = tuple(s(n) for n in names)
    count = Q(len(names))

    def enc(obj: Any, out: list[bytes], ctx: Ctx) -> None:  # must not capture t (weak cache)
        out.append(T.DATACLASS + hooks.class_ref(type(obj), ctx) + count)
        for name, head in zip(names, heads, strict=True):
            out.append(head)
            encode_at(getattr(obj, name), out, ctx, f".{name}")

    return enc


def _annotation(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    """typing constructs (dataclass field types, generated methods' annotations): their origin
    and arguments; a construct without them by its repr (``typing.Any``, a TypeVar)."""
    out.append(T.ANNOTATION)
    origin = getattr(obj, "__origin__", None)
    args = getattr(obj, "__args__", None)
    if origin is None and args is None:
        encode(repr(obj), out, ctx)
        return
    encode(type(obj) if origin is None else origin, out, ctx)
    encode(tuple(args or ()), out, ctx)


def _is_annotation(t: type) -> bool:
    return t.__module__ == "typing" or issubclass(t, (types.GenericAlias, types.UnionType))


def _is_stateless(obj: Any) -> bool:
    """An instance with no attributes and no C-level fields (its layout is object's plus at
    most the dict/weakref pointers) is fully described by its class, like an enum member.
    Checking the layout, not how the class was defined, is what rules out locks and files."""
    t = type(obj)
    extra = t.__basicsize__ - object.__basicsize__
    extra -= _PTR * ((t.__weakrefoffset__ > 0) + (t.__dictoffset__ > 0))
    return extra == 0 and not getattr(obj, "__dict__", None)


def _enc_pandas(obj: Any, out: list[bytes], ctx: Ctx, pd: Any) -> bool:
    """Only reached when the user already imported pandas; we never import it ourselves."""

    def values(x: Any) -> None:
        out.append(s(str(x.dtype)))
        cats = getattr(x.dtype, "categories", None)
        if cats is not None:
            encode((cats.to_numpy(), bool(x.dtype.ordered)), out, ctx)
        encode(x.to_numpy(), out, ctx)

    if isinstance(obj, pd.DataFrame):
        out.append(T.DATAFRAME + Q(obj.shape[1]))
        encode_at(obj.columns, out, ctx, ".columns")
        encode_at(obj.index, out, ctx, ".index")
        for i in range(obj.shape[1]):
            values(obj.iloc[:, i])
    elif isinstance(obj, pd.Series):
        out.append(T.SERIES)
        encode_at((obj.name, obj.index), out, ctx, ".index")
        values(obj)
    elif isinstance(obj, pd.Index):
        out.append(T.PANDAS_INDEX)
        encode(list(obj.names), out, ctx)
        values(obj)
    elif obj is pd.NaT or obj is pd.NA:
        out.append(T.PANDAS_MISSING + s(repr(obj)))
    elif isinstance(obj, (pd.Timestamp, pd.Timedelta)):
        tz = str(getattr(obj, "tz", None))
        out.append(T.PANDAS_TIME + s(qualname(type(obj))) + s(obj.isoformat()) + s(tz))
    else:
        return False
    return True


# Subclasses of these without instance state key as their base (OrderedDict before dict).
_BUILTIN_BASES = (tuple, list, OrderedDict, dict, set, frozenset, str, bytes, int, float, complex)


def _enc_object(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    """Types with no encoder of their own: decided per object."""
    t = type(obj)
    pd = sys.modules.get("pandas")
    if pd is not None and t.__module__.startswith("pandas") and _enc_pandas(obj, out, ctx, pd):
        return
    if hooks.callable(obj, out, ctx):
        return
    if callable(getattr(obj, "get_params", None)) and callable(getattr(obj, "fit", None)):
        state = getattr(obj, "__dict__", {})
        fitted = sorted(k for k in state if k.endswith("_") and not k.startswith("_"))
        if fitted:
            fallback(obj, out, ctx, f"is a fitted estimator ({fitted[0]!r} is not in get_params)")
            return
        out.append(T.ESTIMATOR + hooks.class_ref(t, ctx))
        encode_at(obj.get_params(deep=False), out, ctx, ".get_params()")
    elif isinstance(obj, _BUILTIN_BASES) and not getattr(obj, "__dict__", None):
        base = next(b for b in t.__mro__ if b in _BUILTIN_BASES)
        out.append(T.BUILTIN_SUBCLASS + hooks.class_ref(t, ctx))
        DISPATCH[base](obj, out, ctx)
        if isinstance(obj, defaultdict):
            encode_at(obj.default_factory, out, ctx, ".default_factory")
    elif isinstance(obj, pathlib.PurePath):
        out.append(T.PATH + s(t.__name__) + s(str(obj)))
    elif callable(obj) and hasattr(obj, "__wrapped__"):
        out.append(T.WRAPPED)  # a decorator object (e.g. a memoized function): what it wraps
        encode_at(obj.__wrapped__, out, ctx, ".__wrapped__")
    elif _is_stateless(obj):
        out.append(T.STATELESS + hooks.class_ref(t, ctx))
    else:
        fallback(obj, out, ctx, "has no canonical encoding")


# ---------------------------------------------------------------- resolution and registry
_REGISTRY: dict[type, Callable[[Any], Any]] = {}
_RESOLVED: weakref.WeakKeyDictionary[type, Enc] = weakref.WeakKeyDictionary()
# Keyed by weakref.ref(type): reading the dict itself skips a Python-level call per value.
_resolved_get: Callable[[Any], Enc | None] = _RESOLVED.data.get  # type: ignore[attr-defined]
_ref = weakref.ref


def _registered(fn: Callable[[Any], Any], name: str) -> Enc:
    head = T.REGISTERED + s(name)

    def enc(obj: Any, out: list[bytes], ctx: Ctx) -> None:
        try:
            stand_in = fn(obj)
        except Exception as exc:
            raise Unencodable(obj, f"made its registered encoder raise {exc!r}") from None
        out.append(head)
        encode_at(stand_in, out, ctx, " (registered encoder's value)")

    return enc


def _resolve(t: type) -> Enc:
    for base in t.__mro__[1:]:
        if base in _REGISTRY:
            return _registered(_REGISTRY[base], qualname(t))
    if getattr(t, "__cache_key__", None) is not None:
        return _enc_cache_key
    if issubclass(t, type):
        return _enc_type
    if issubclass(t, enum.Enum):
        return _enc_enum
    if issubclass(t, np.generic):
        return _numpy_scalar_encoder(t)
    if issubclass(t, np.ndarray):
        return _enc_ndarray_sub
    random = np.random
    for base, enc in (
        (random.SeedSequence, _enc_seed_sequence),
        (random.BitGenerator, _enc_bit_generator),
        (random.Generator, _enc_generator),
        (random.RandomState, _enc_random_state),
    ):
        if issubclass(t, base):
            return enc
    if dataclasses.is_dataclass(t):
        return _dataclass_encoder(t)
    if _is_annotation(t):
        return _annotation
    return _enc_object


def encode_other(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    t = type(obj)
    enc = _resolved_get(_ref(t))
    if enc is None:
        enc = _RESOLVED[t] = _resolve(t)
    enc(obj, out, ctx)


def register_encoder(type_: type, fn: Callable[[Any], Any]) -> None:
    """Key instances of ``type_`` (and, failing an exact match, of its subclasses) by
    ``fn(obj)``: a stand-in value that expcache can encode (a tuple of fields, an array...).

    The key holds a tag and the instance's qualified type name before the stand-in, so two
    types whose stand-ins are equal still key apart. Registering a type again replaces its
    encoder. Types expcache encodes itself (int, dict, ndarray...) cannot be re-registered:
    that would silently change the keys of every function.
    """
    if not isinstance(type_, type):
        raise ConfigError(param="type", value=type_, expected="a class")
    if not callable(fn):
        raise ConfigError(param="fn", value=fn, expected="a callable: obj -> encodable value")
    if type_ in DISPATCH and type_ not in _REGISTRY:
        raise ConfigError(
            param="type",
            value=type_,
            expected="a class expcache has no built-in encoding for",
            hint="wrap the values in a class of your own, or give it a __cache_key__() method",
        )
    _REGISTRY[type_] = fn
    DISPATCH[type_] = _registered(fn, qualname(type_))
    _RESOLVED.clear()  # subclasses may resolve to it now


def _unregister(type_: type) -> None:
    """For tests: forget a registration."""
    if _REGISTRY.pop(type_, None) is not None:
        del DISPATCH[type_]
        _RESOLVED.clear()


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
    np.ndarray: _enc_ndarray,
    type(...): _const(T.ELLIPSIS),
    type(NotImplemented): _const(T.NOT_IMPLEMENTED),
    type: _enc_type,
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
for _n in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.longlong, np.ulonglong, np.float16, np.float32, np.float64, np.longdouble,
    np.complex64, np.complex128, np.clongdouble, np.str_, np.bytes_, np.datetime64,
    np.timedelta64,
):  # fmt: skip
    DISPATCH[_n] = _numpy_scalar_encoder(_n)
for _r, _e in (
    (np.random.SeedSequence, _enc_seed_sequence),
    (np.random.Generator, _enc_generator),
    (np.random.RandomState, _enc_random_state),
    (np.random.PCG64, _enc_bit_generator),
    (np.random.PCG64DXSM, _enc_bit_generator),
    (np.random.MT19937, _enc_bit_generator),
    (np.random.Philox, _enc_bit_generator),
    (np.random.SFC64, _enc_bit_generator),
):
    DISPATCH[_r] = _e
