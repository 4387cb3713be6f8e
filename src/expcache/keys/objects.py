"""Objects: classes (as references), instances by what their class declares, and the
registry of user encoders.

An instance is keyed by the first of: a registered encoder (exact type, then the MRO),
``__cache_key__()``, the numpy/pandas families (``numeric``), a dataclass's fields, an
unfitted estimator's ``get_params()``, the base value of a builtin subclass without state,
what a decorator object wraps, its class alone when it has no state at all -- else its
pickle when the user allowed it, else ``KeyEncodingError``. Wherever a class is written
(these instances' classes, classes as values) it is a reference from ``hooks.class_ref``:
by name, or by content for the user's own classes (``identity``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import pathlib
import struct
import types
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import tags as T
from .encode import (
    _RESOLVED,
    DISPATCH,
    Ctx,
    Enc,
    Q,
    Unencodable,
    encode,
    encode_at,
    fallback,
    hooks,
    module_name,
    qualname,
    s,
)

__all__ = ["RESOLVERS", "register_encoder"]

_PTR = struct.calcsize("P")


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


# Subclasses of these without instance state key as their base (OrderedDict before dict).
_BUILTIN_BASES = (tuple, list, OrderedDict, dict, set, frozenset, str, bytes, int, float, complex)


def _enc_object(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    """Types with no encoder of their own: decided per object."""
    t = type(obj)
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
# Families of types other modules encode (numeric.py: numpy, pandas), asked in order.
RESOLVERS: list[Callable[[type], Enc | None]] = []


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
    for resolver in RESOLVERS:
        found = resolver(t)
        if found is not None:
            return found
    if dataclasses.is_dataclass(t):
        return _dataclass_encoder(t)
    if _is_annotation(t):
        return _annotation
    return _enc_object


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


# ---------------------------------------------------------------- callables
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: every Python class (and some C types) has it


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
    return f"{module_name(mod)}.{qn}"


def _enc_callable(fn: Any, out: list[bytes], ctx: Ctx) -> bool:
    if isinstance(fn, types.FunctionType):
        DISPATCH[types.FunctionType](fn, out, ctx)  # identity's function encoder
    elif isinstance(fn, types.MethodType):
        out.append(T.BOUND_METHOD)
        encode_at(fn.__func__, out, ctx, ".__func__")
        encode_at(fn.__self__, out, ctx, ".__self__")
    elif isinstance(fn, functools.partial):
        out.append(T.PARTIAL)
        encode_at(fn.func, out, ctx, ".func")
        encode_at(fn.args, out, ctx, ".args")
        encode_at(fn.keywords, out, ctx, ".keywords")
    elif (name := _c_callable_name(fn)) is not None:
        out.append(T.NAMED_CALLABLE + s(name))
        owner = getattr(fn, "__self__", None)
        if owner is not None and not isinstance(owner, (types.ModuleType, type)):
            encode_at(owner, out, ctx, ".__self__")  # e.g. a bound method of a C object
    else:
        return False
    return True


DISPATCH[type] = _enc_type
hooks.callable = _enc_callable
hooks.resolve = _resolve
