"""KeyMaker: one call's ``(args, kwargs)`` -> its key; built once per memoized function.

The hit path is ``KeyMaker.__call__``, once per call: bind (nothing to do when every
parameter is given positionally), one dispatch-table lookup and encoder call per argument,
one join, one xxh3-128. Everything that can be prepared -- the signature, the parameter
headers, the prefix, the function identity (on first use: decorators run before the helpers
and constants they refer to are defined) -- is prepared once. Everything meant for reports
(``manifest``, ``argument_digests``) is off that path.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import xxhash

from .. import _validate
from ..errors import ConfigError, KeyEncodingError
from . import tags as T
from .bind import Binder
from .encode import (
    _D,
    _NAN,
    DISPATCH,
    Ctx,
    H,
    Q,
    Unencodable,
    _q,
    encode,
    encode_other,
    module_name,
    s,
)
from .format import KEY_FORMAT_VERSION, check_namespace, key_prefix, label_tag
from .identity import identity_parts, parts_digest

__all__ = ["ARG_HINT", "FN_HINT", "KeyMaker", "PickleArgs", "default_label", "describe_failure"]

PickleArgs = bool | Literal["warn"]
_hex = xxhash.xxh3_128_hexdigest
_digest = xxhash.xxh3_128_digest
_i64, _f64, _u64 = _q, _D, Q  # encode's packers: the inlined scalars write its bytes
_INT_MIN, _INT_END = -(1 << 63), 1 << 63
_FLOAT_NAN = T.FLOAT + _NAN  # every NaN is written as this one
ARG_HINT = (
    "give its class a __cache_key__() method, register an encoder with "
    "expcache.register_encoder(), list the parameter in ignore_args, or pass pickle_args=True"
)
_SELF_HINT = (
    "give the class a __cache_key__() method (or register an encoder for it with "
    "expcache.register_encoder()), or pass pickle_args=True"
)
_VAR_HINT = (
    "give its class a __cache_key__() method, register an encoder with "
    "expcache.register_encoder(), pass pickle_args=True, or pass signature= to own the "
    "function's identity"
)
FN_HINT = (
    "give it a __cache_key__() method, pass pickle_args=True, or pass signature= "
    "(or version=) explicitly"
)
_DEEP = "is nested too deeply or contains itself (a reference cycle)"


def describe_failure(exc: Unencodable, name: str, context: str, hint: str) -> KeyEncodingError:
    """One message: what could not be keyed, where it sat, why, and the fixes."""
    path = "".join(reversed(exc.path))
    if exc.where is not None:
        at = f" at {path}" if path else ""
        subject = f"{exc.type_name} object{at} in {exc.where}"
        hint = _VAR_HINT if hint == FN_HINT else hint  # an argument keeps its own fixes
    else:
        subject = f"{exc.type_name} object" + (f" at {name}{path}" if path else "")
    return KeyEncodingError(
        f"cannot build a cache key for {context}: {subject} {exc.reason}; {hint}"
    )


def default_label(fn: Any) -> str:
    """``<module>.<qualname>`` of what ``fn`` calls (``__mp_main__`` read as ``__main__``)."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, types.MethodType):
        target = target.__func__
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None)
    if not isinstance(name, str):
        module, name = type(target).__module__, type(target).__qualname__
    return f"{module_name(module)}.{name}"


class KeyMaker:
    """Turns one call's ``(args, kwargs)`` into ``[ns:]ex3:<tag>:<digest>``.

    ``pickle_args``: False (arguments without a canonical encoding raise KeyEncodingError),
    True (keyed by their pickle, silently) or "warn" (keyed by their pickle with one warning
    per argument name). ``label`` (default ``<module>.<qualname>``) is what the tag is made
    from. ``method`` says the first parameter is ``self``: the instance is keyed like any
    argument (``__cache_key__()``, a dataclass's fields, ...), with its own error message.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        ignore_args: Iterable[str] = (),
        signature: bytes | None = None,
        version: str | None = None,
        namespace: str = "",
        pickle_args: PickleArgs = False,
        label: str | None = None,
    ) -> None:
        self.namespace = check_namespace(namespace)
        if signature is not None and not isinstance(signature, bytes):
            raise ConfigError(param="signature", value=signature, expected="bytes or None")
        self.signature = signature
        self.version: str | None = _validate.text("version", version, allow_none=True)
        self.pickle_args: PickleArgs = _validate.choice(
            "pickle_args", pickle_args, (False, True, "warn")
        )
        self.ignore_args = _validate.names("ignore_args", ignore_args)
        self.label: str = (
            default_label(fn)
            if label is None
            else _validate.text("label", label, pattern=r".+", describe="a non-empty string")
        )
        self.tag = label_tag(self.label)
        self.prefix = key_prefix(self.namespace, self.label)
        self.fn = fn
        self._name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        self._binder = b = Binder(fn, self.ignore_args, self._name)
        self.method: bool = b.method
        self._warn = pickle_args == "warn"
        # No frames: immutable, shared by every call. In "warn" mode the hit path first tries
        # without pickling: canonical arguments (nearly every call) give the same bytes either
        # way, and only a call that needs a pickle pays for the noting pass (_stream_warn).
        self._ctx = Ctx(bool(pickle_args) and not self._warn)
        self._warned: set[str] = set()
        self._identity: bytes | None = None
        self._parts: dict[str, bytes] | None = None
        self._heads = [(i, T.ARG + s(b.names[i])) for i in b.keep]
        # the hit path's parameters: (index, header, header + the tag of each inlined scalar)
        self._scalar_heads = [(i, h, h + T.INT, h + T.FLOAT, h + T.STR) for i, h in self._heads]
        self._n_fast = b.n_fast
        self._tail = b.keep_varargs or b.keep_varkw

    # -- identity ------------------------------------------------------------------------------
    @property
    def identity(self) -> bytes:
        """16 bytes: the digest of ``manifest()``; ``signature``/``version`` fold in here."""
        return self._identity or self._load_identity()

    def manifest(self) -> dict[str, bytes]:
        """The identity's named parts, sorted by name -> 16-byte digest (for explain())."""
        if self._parts is None:
            self._load_identity()
        assert self._parts is not None
        return dict(sorted(self._parts.items()))

    def _load_identity(self) -> bytes:
        parts: dict[str, bytes] = {}
        if self.signature is not None:
            parts["signature"] = H(T.BYTES + Q(len(self.signature)) + self.signature)
        else:
            ctx = Ctx(bool(self.pickle_args), []).walk()
            context = f"function {self._name}()"
            try:
                parts.update(identity_parts(self.fn, ctx))
            except Unencodable as exc:
                raise describe_failure(exc, "fn", context, FN_HINT) from None
            except RecursionError:
                raise KeyEncodingError(
                    f"cannot build a cache key for {context}: {_DEEP}; {FN_HINT}"
                ) from None
            for where in ctx.pickled or ():
                self._warn_pickled(where if " of " in where else f"a {where} object in {context}")

        version = self.version
        parts["version"] = H(T.NONE if version is None else T.STR + s(version))
        parts["namespace"] = H(T.STR + s(self.namespace))
        parts["key_format"] = H(T.INT + KEY_FORMAT_VERSION.to_bytes(8, "little"))
        parts["label"] = H(T.STR + s(self.label))
        self._parts = parts
        self._identity = identity = parts_digest(parts)
        return identity

    def _warn_pickled(self, what: str) -> None:
        if not self._warn or what in self._warned:
            return
        self._warned.add(what)
        hint = "give its class a __cache_key__() method or register an encoder with "
        hint += "expcache.register_encoder()"
        if what.startswith("argument"):
            hint += ", or list the parameter in ignore_args"
        warnings.warn(
            f"expcache: {what} has no canonical encoding and is keyed by its pickle (pickle "
            f"bytes are not canonical: equal values may miss); to key it by content, {hint}",
            UserWarning,
            stacklevel=4,
        )

    # -- the hit path --------------------------------------------------------------------------
    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        ident = self._identity or self._load_identity()
        if not kwargs and len(args) == self._n_fast:
            values: Any = args
            extra: tuple[Any, ...] = ()
            extra_kw: dict[str, Any] = {}
        else:
            values, extra, extra_kw = self._binder.bind(args, kwargs)
        out = [ident]
        ctx = self._ctx
        get = DISPATCH.get
        where = -1
        try:
            # float, int and str inline (the same bytes as encode's _enc_float, _enc_int and
            # _enc_str, tested against them): a call per argument is a quarter of a small key
            for where, head, int_head, float_head, str_head in self._scalar_heads:
                v = values[where]
                t = type(v)
                if t is float:
                    out.append(float_head + _f64(v) if v == v else head + _FLOAT_NAN)
                elif t is int and _INT_MIN <= v < _INT_END:
                    out.append(int_head + _i64(v))
                elif t is str:
                    b = v.encode("utf-8", "surrogatepass")
                    out.append(str_head + _u64(len(b)) + b)
                else:
                    out.append(head)
                    enc = get(t)
                    if enc is None:
                        encode_other(v, out, ctx)
                    else:
                        enc(v, out, ctx)
            if self._tail:
                where = -1
                self._encode_tail(extra, extra_kw, out, ctx)
        except (Unencodable, KeyEncodingError, RecursionError) as exc:
            if self._warn:  # something needs its pickle: the pass that notes and warns
                return self.prefix + _hex(self._stream_warn(args, kwargs))
            if isinstance(exc, Unencodable):
                raise self._arg_error(exc, where) from None
            if isinstance(exc, RecursionError):
                raise self._deep(where) from None
            raise
        return self.prefix + _hex(b"".join(out))

    def many(self, calls: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]]) -> list[str]:
        """``[self(args, kwargs) for args, kwargs in calls]``, cheaper for ``map``: a batch of
        positional calls whose arguments are all float, int or str is keyed in one loop (the
        same bytes as ``__call__``); any other call goes through ``__call__``."""
        ident = self._identity or self._load_identity()
        prefix = self.prefix
        heads = self._scalar_heads
        n_fast = -2 if self._tail else self._n_fast  # -2: never (the tail must be written)
        keys: list[str] = []
        append = keys.append
        for args, kwargs in calls:
            if not kwargs and len(args) == n_fast:
                out = [ident]
                for where, head, int_head, float_head, str_head in heads:
                    v = args[where]
                    t = type(v)
                    if t is float:
                        out.append(float_head + _f64(v) if v == v else head + _FLOAT_NAN)
                    elif t is int and _INT_MIN <= v < _INT_END:
                        out.append(int_head + _i64(v))
                    elif t is str:
                        b = v.encode("utf-8", "surrogatepass")
                        out.append(str_head + _u64(len(b)) + b)
                    else:
                        break
                else:
                    append(prefix + _hex(b"".join(out)))
                    continue
            append(self(args, kwargs))
        return keys

    def digest(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """16-byte digest of identity + bound arguments (defaults applied, ignored ones dropped)."""
        return bytes.fromhex(self(args, kwargs)[len(self.prefix) :])

    def _encode_tail(
        self,
        extra: tuple[Any, ...],
        extra_kw: dict[str, Any],
        out: list[bytes],
        ctx: Ctx,
        pickled: list[str] | None = None,
    ) -> None:
        """``*args`` then ``**kwargs``; with ``pickled`` (warn mode), warn after each."""
        b = self._binder
        for keep, where, tag, value, kind in (
            (b.keep_varargs, -2, T.VAR_POSITIONAL, extra, tuple),
            (b.keep_varkw, -3, T.VAR_KEYWORD, extra_kw, dict),
        ):
            if not keep:
                continue
            try:
                out.append(tag)
                DISPATCH[kind](value, out, ctx)
            except Unencodable as exc:
                raise self._arg_error(exc, where) from None
            if pickled:
                self._warn_pickled(f"argument {self._param(where)!r} of {self._name}()")
                pickled.clear()

    def _stream_warn(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        """The same bytes as ``__call__``, noting which arguments had to be pickled."""
        ident = self._identity or self._load_identity()
        values, extra, extra_kw = self._binder.bind(args, kwargs)
        pickled: list[str] = []
        ctx = Ctx(True, pickled)
        out = [ident]
        where = -1
        try:
            for where, head in self._heads:
                out.append(head)
                encode(values[where], out, ctx)
                if pickled:
                    name = self._binder.names[where]
                    self._warn_pickled(f"argument {name!r} of {self._name}()")
                    pickled.clear()
            if self._tail:
                self._encode_tail(extra, extra_kw, out, ctx, pickled)
        except Unencodable as exc:
            raise self._arg_error(exc, where) from None
        except RecursionError:
            raise self._deep(where) from None
        return b"".join(out)

    # -- errors --------------------------------------------------------------------------------
    def _param(self, where: int) -> str:
        b = self._binder
        if where >= 0:
            return b.names[where]
        if where == -1:  # somewhere in the extra arguments
            return "/".join(str(n) for n in (b.varargs, b.varkw) if n)
        return str(b.varargs if where == -2 else b.varkw)

    def _arg_error(self, exc: Unencodable, where: int) -> KeyEncodingError:
        name = self._param(where)
        if self.method and where == 0:
            return describe_failure(exc, name, f"'self' of method {self._name}()", _SELF_HINT)
        return describe_failure(exc, name, f"argument {name!r} of {self._name}()", ARG_HINT)

    def _deep(self, where: int) -> KeyEncodingError:
        name = self._param(where)
        return KeyEncodingError(f"cannot build a cache key for argument {name!r}: {_DEEP}")

    # -- reports (off the hit path) ------------------------------------------------------------
    def argument_digests(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> dict[str, bytes]:
        """Bound, non-ignored parameter name -> 8-byte digest of its value; entries of
        ``*args`` as ``name[i]``, of ``**kwargs`` under their keywords (for explain())."""
        b = self._binder
        values, extra, extra_kw = b.bind(args, kwargs)
        ctx = Ctx(bool(self.pickle_args))
        items: list[tuple[str, Any, int]] = [(b.names[i], values[i], i) for i in b.keep]
        if b.keep_varargs:
            items += [(f"{b.varargs}[{j}]", v, -2) for j, v in enumerate(extra)]
        if b.keep_varkw:
            items += [(k, extra_kw[k], -3) for k in sorted(extra_kw)]
        found: dict[str, bytes] = {}
        for name, value, where in items:
            sub: list[bytes] = []
            try:
                encode(value, sub, ctx)
            except Unencodable as exc:
                raise self._arg_error(exc, where) from None
            except RecursionError:
                raise self._deep(where) from None
            found[name] = _digest(b"".join(sub))[:8]
        return found
