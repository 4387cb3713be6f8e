"""Function and class identity: what makes a callable compute what it computes.

A function of the user's code is identified by named *parts* (``code``, ``defaults``,
``kwdefaults``, ``closure <var>``, ``global <name>``, ``function <name>``); its identity is
the digest of the sorted parts, so a report can say which part changed (``KeyMaker.manifest``).
Code of the standard library and of installed packages (and expcache's own) is identified by
qualified name only: the environment pins it, and walking it would tie keys to library
internals and make them expensive.

**Closure variables, globals and default values** follow one rule: a value with a canonical
encoding is keyed by its content; a value known not to affect results -- a logger, a lock,
condition, event, semaphore or barrier, a thread-local -- by its type (modules are keyed by
name, classes and functions as below); anything else by its pickle when ``pickle_args`` is
True or "warn", and otherwise it is a ``KeyEncodingError`` at the first call that names the
variable (``global X of f()``, ``closure variable X of f()``).

**Classes** of the user's code (module file outside the library paths, like functions) are
keyed by qualified name plus a digest of their metaclass, bases, members (methods by their
identity, class-level data by the rule above; dunder data such as ``__doc__`` or
``__slotnames__`` is bookkeeping and skipped) and, for enums, their members' values. Other
classes are keyed by qualified name. A class's digest is computed once per process (it is
cached weakly per class), so the hit path never re-walks methods. Functions and classes that
refer back to one being computed (recursion, a method naming its own class, mutual references)
are written as a back-reference by name, and cycles are made independent of where the walk
started (``graph``).
"""

from __future__ import annotations

import dis
import enum
import functools
import logging
import os
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

from . import encode as E
from . import graph
from . import tags as T
from .encode import Ctx, H, Q, Unencodable, encode, qualname, s
from .objects import _HEAPTYPE, _c_callable_name, _enc_callable

__all__ = ["class_ref", "function_identity", "identity_parts", "is_library_file", "parts_digest"]

def _lib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    # expcache itself: an editable install must key user code the way an installed one does.
    found.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found |= {os.path.realpath(p) for p in found}
    return (*sorted(p.rstrip(os.sep) + os.sep for p in found), "<frozen")


_LIB_PREFIXES = _lib_prefixes()


def is_library_file(path: str) -> bool:
    return path.startswith(_LIB_PREFIXES)


def is_user_class(cls: type) -> bool:
    """A Python class whose module is not a file of the library paths (a script, a notebook
    cell, exec'd code and the user's own packages all count as the user's code)."""
    if not cls.__flags__ & _HEAPTYPE:
        return False
    module = sys.modules.get(str(cls.__module__))
    path = getattr(module, "__file__", None)
    return not (isinstance(path, str) and is_library_file(path))


# ---------------------------------------------------------------- the variable rule
def _harmless_types() -> tuple[type, ...]:
    found: list[type] = [
        logging.Logger,
        logging.LoggerAdapter,
        type(threading.Lock()),
        type(threading.RLock()),
        threading.Condition,
        threading.Event,
        threading.Semaphore,
        threading.Barrier,
        threading.local,
    ]
    sync = sys.modules.get("multiprocessing.synchronize")  # only if the user imported it
    if sync is not None:
        found += [sync.SemLock, sync.Condition, sync.Event, sync.Barrier]
    return tuple(found)


def encode_variable(value: Any, out: list[bytes], ctx: Ctx, where: str) -> None:
    """The one rule for closure cells, globals, defaults and class data (module docstring)."""
    sub: list[bytes] = []
    try:
        encode(value, sub, ctx.strict())
    except Unencodable as first:
        if isinstance(value, _harmless_types()):
            out.append(T.TYPE_ONLY + s(qualname(type(value))))
            return
        if not ctx.pickle:
            first.where = first.where or where
            raise
        sub = []
        pickled = ctx.pickled
        before = len(pickled) if pickled is not None else 0
        try:
            encode(value, sub, ctx)
        except Unencodable as exc:
            exc.where = exc.where or where
            raise
        if pickled is not None and len(pickled) > before:
            del pickled[before:]
            pickled.append(where)  # what a "warn" KeyMaker names in its one warning
    out.extend(sub)


# ---------------------------------------------------------------- code and functions
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_NAMES: weakref.WeakKeyDictionary[types.CodeType, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names the code (and its nested code) *loads* as globals: not attribute names, which
    share ``co_names`` with them and would drag unrelated module globals into the key."""
    found = _NAMES.get(code)
    if found is None:
        names: set[str] = set()
        stack = [code]
        while stack:
            c = stack.pop()
            names.update(i.argval for i in dis.get_instructions(c) if i.opname in _GLOBAL_OPS)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        found = _NAMES[code] = tuple(sorted(names))
    return found


def _enc_code(code: types.CodeType, out: list[bytes], ctx: Ctx) -> None:
    flags = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    out.append(T.CODE + b"".join(Q(n) for n in flags) + Q(len(code.co_code)) + code.co_code)
    table = getattr(code, "co_exceptiontable", b"")  # 3.11+: where exceptions are caught
    out.append(Q(len(table)) + table)
    for part in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        encode(part, out, ctx)
    encode(code.co_consts, out, ctx)  # nested code objects recurse via the dispatch table


def parts_digest(parts: dict[str, bytes]) -> bytes:
    """The identity of named parts: equal parts <=> equal digest (names are sorted)."""
    return H(b"".join(T.PART + s(name) + parts[name] for name in sorted(parts)))


def _variable_digest(value: Any, ctx: Ctx, where: str) -> bytes:
    sub: list[bytes] = []
    encode_variable(value, sub, ctx, where)
    return H(b"".join(sub))


def function_parts(fn: types.FunctionType, ctx: Ctx) -> dict[str, bytes]:
    """The named parts of a Python function (``ctx`` is a walk with ``fn`` on its frames)."""
    code = fn.__code__
    of = f"{fn.__qualname__}()"
    head: list[bytes] = [s(qualname(fn))]
    _enc_code(code, head, ctx)
    parts = {"code": H(b"".join(head))}
    defaults = fn.__defaults__ or ()
    positional = code.co_varnames[: code.co_argcount]
    names = positional[len(positional) - len(defaults) :]
    sub: list[bytes] = [Q(len(defaults))]
    for name, value in zip(names, defaults, strict=True):
        encode_variable(value, sub, ctx, f"default of parameter {name} of {of}")
    parts["defaults"] = H(b"".join(sub))
    kw = fn.__kwdefaults__ or {}
    sub = [Q(len(kw))]
    for name in sorted(kw):
        sub.append(s(name))
        encode_variable(kw[name], sub, ctx, f"default of parameter {name} of {of}")
    parts["kwdefaults"] = H(b"".join(sub))
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            contents = cell.cell_contents
        except ValueError:  # not assigned yet
            parts[f"closure {var}"] = H(T.UNASSIGNED_CELL)
            continue
        parts[f"closure {var}"] = _variable_digest(contents, ctx, f"closure variable {var} of {of}")
    g = fn.__globals__
    for name in _global_names(code):
        if name not in g:
            continue  # a builtin, or not defined yet: absent parts are part of the identity
        value = g[name]
        if isinstance(value, types.FunctionType) and not is_library_file(
            value.__code__.co_filename
        ):
            sub = []
            _enc_function(value, sub, ctx)
            parts[f"function {name}"] = H(b"".join(sub))
        else:
            parts[f"global {name}"] = _variable_digest(value, ctx, f"global {name} of {of}")
    return parts


def _function_digest(fn: types.FunctionType, ctx: Ctx) -> bytes:
    return parts_digest(function_parts(fn, ctx))


def _enc_function(fn: types.FunctionType, out: list[bytes], ctx: Ctx) -> None:
    if is_library_file(fn.__code__.co_filename):
        out.append(T.NAMED_CALLABLE + s(qualname(fn)))
        return
    out.append(graph.node(fn, ctx, _FUNCTION, _kind).value)


# ---------------------------------------------------------------- classes
# Per pickle mode (a digest may contain a pickle): class -> its value in a key. Classes of a
# cycle live apart, with the ids of the cycle's members (see graph.py).
_CLASS_REFS: dict[bool, weakref.WeakKeyDictionary[type, bytes]] = {
    False: weakref.WeakKeyDictionary(),
    True: weakref.WeakKeyDictionary(),
}
_CYCLIC: dict[bool, weakref.WeakKeyDictionary[type, tuple[bytes, frozenset[int]]]] = {
    False: weakref.WeakKeyDictionary(),
    True: weakref.WeakKeyDictionary(),
}
_refs_get: dict[bool, Callable[[Any], bytes | None]] = {
    mode: refs.data.get  # type: ignore[attr-defined]
    for mode, refs in _CLASS_REFS.items()
}
_ref = weakref.ref
_SKIPPED_MEMBERS = (
    types.MemberDescriptorType,  # __slots__ entries: the layout, already in the instance
    types.GetSetDescriptorType,  # __dict__/__weakref__
    type(__import__("collections").namedtuple("_N", "a").a),  # namedtuple field getters
)
_MEMBER_FUNCS = (staticmethod, classmethod, property, functools.cached_property)


def _methods(value: Any) -> tuple[str, tuple[Any, ...]] | None:
    """A member that holds functions: its kind and the functions (None: plain data)."""
    if isinstance(value, types.FunctionType):
        return ("function", (value,))
    if isinstance(value, (staticmethod, classmethod)):
        return (type(value).__name__, (value.__func__,))
    if isinstance(value, property):
        return ("property", (value.fget, value.fset, value.fdel))
    if isinstance(value, functools.cached_property):
        return ("cached_property", (value.func,))
    return None


def _enc_method(fn: Any, out: list[bytes], ctx: Ctx, where: str) -> None:
    """A method is part of its class, not a node of its own: its references back to the class
    are then a self-reference of the class (a cycle only when something else is involved)."""
    if isinstance(fn, types.FunctionType) and not is_library_file(fn.__code__.co_filename):
        out.append(T.FUNCTION + s(qualname(fn)) + _function_digest(fn, ctx))
    else:
        encode_variable(fn, out, ctx, where)


def _is_skipped(name: str, value: Any, enum_names: frozenset[str]) -> bool:
    if isinstance(value, _SKIPPED_MEMBERS) or name == "_abc_impl" or name in enum_names:
        return True
    if name[:2] == "__" == name[-2:]:  # dunder *data* is bookkeeping (__doc__, __slotnames__)
        return not (callable(value) or isinstance(value, _MEMBER_FUNCS))
    return bool(enum_names) and name[:1] == "_" == name[-1:]  # enum's _sunder_ names


def _class_digest(cls: type, ctx: Ctx) -> bytes:
    out: list[bytes] = []
    of = cls.__qualname__
    if type(cls) is not type:
        out.append(class_ref(type(cls), ctx))
    out.append(Q(len(cls.__bases__)))
    out.extend(class_ref(base, ctx) for base in cls.__bases__)
    members = getattr(cls, "__members__", None) if isinstance(cls, enum.EnumMeta) else None
    enum_names = frozenset(members or ())
    if members is not None:
        out.append(Q(len(members)))
        for name, member in members.items():
            out.append(s(name))
            encode_variable(member.value, out, ctx, f"value of {of}.{name}")
    namespace = cls.__dict__
    for name in sorted(namespace):
        value = namespace[name]
        if _is_skipped(name, value, enum_names):
            continue
        out.append(s(name))
        where = f"class attribute {name} of {of}"
        methods = _methods(value)
        if methods is None:
            encode_variable(value, out, ctx, where)
            continue
        out.append(s(methods[0]))
        for fn in methods[1]:
            _enc_method(fn, out, ctx, where)
    return H(b"".join(out))


def class_ref(cls: type, ctx: Ctx) -> bytes:
    """How a class is written into a key: ``T`` + name, or ``C`` + name + content digest."""
    found = _refs_get[ctx.pickle](_ref(cls))
    if found is not None:
        return found
    if not is_user_class(cls):
        found = T.TYPE_NAME + s(qualname(cls))
        _CLASS_REFS[False][cls] = _CLASS_REFS[True][cls] = found
        return found
    cyclic = _CYCLIC[ctx.pickle].get(cls)
    st = ctx.state
    if cyclic is not None and (
        st is None
        or (cyclic[1].isdisjoint(st.frames) and (st.cycle is None or id(cls) not in st.cycle))
    ):
        return cyclic[0]
    walk = ctx.walk()
    pickled = walk.pickled
    assert pickled is not None
    before = len(pickled)
    result = graph.node(cls, walk, _CLASS, _kind)
    if result.final:
        modes = (ctx.pickle,) if len(pickled) > before else (False, True)  # pickle involved?
        for mode in modes:
            if not result.members:
                _CLASS_REFS[mode][cls] = result.value
            for member, value in zip(result.members, result.refs, strict=True):
                if isinstance(member, type):
                    _CYCLIC[mode][member] = (value, result.ids)
    return result.value


_CLASS = graph.Kind(T.CLASS, T.CLASS_BACKREF, _class_digest)
_FUNCTION = graph.Kind(T.FUNCTION, T.FUNCTION_BACKREF, _function_digest)


def _kind(obj: Any) -> graph.Kind:
    return _CLASS if isinstance(obj, type) else _FUNCTION


# ---------------------------------------------------------------- the wrapped callable
def identity_parts(fn: Any, ctx: Ctx) -> dict[str, bytes]:
    """The named parts of the callable a KeyMaker wraps; its own code is always walked."""
    walk = ctx.walk()
    if isinstance(fn, types.FunctionType):
        mark = graph.enter(walk, fn)
        try:
            return function_parts(fn, walk)
        finally:
            graph.leave(walk, fn, mark)
    if isinstance(fn, types.MethodType):
        parts = identity_parts(fn.__func__, walk)
        parts["self"] = _at(fn.__self__, walk, ".__self__")
    elif isinstance(fn, functools.partial):
        parts = identity_parts(fn.func, walk)
        parts["partial args"] = _at(fn.args, walk, ".args")
        parts["partial keywords"] = _at(fn.keywords, walk, ".keywords")
    elif isinstance(fn, type):
        parts = {"code": H(class_ref(fn, walk))}
    elif _c_callable_name(fn) is not None:
        sub: list[bytes] = []
        _enc_callable(fn, sub, walk)  # its name (and a C object's bound self)
        parts = {"code": H(b"".join(sub))}
    elif not callable(fn):
        raise Unencodable(fn, "is not callable")
    elif getattr(type(fn), "__cache_key__", None) is None and hasattr(fn, "__wrapped__"):
        parts = identity_parts(fn.__wrapped__, walk)
        parts["wrapper"] = H(class_ref(type(fn), walk))
    else:  # a callable instance: the code of its __call__ and the data it carries
        parts = identity_parts(type(fn).__call__, walk)
        parts["instance"] = _at(fn, walk, "")
    return parts


def _at(obj: Any, ctx: Ctx, segment: str) -> bytes:
    sub: list[bytes] = []
    E.encode_at(obj, sub, ctx, segment)
    return H(b"".join(sub))


def function_identity(fn: Any, ctx: Ctx) -> bytes:
    return parts_digest(identity_parts(fn, ctx))


E.hooks.class_ref = class_ref
E.DISPATCH[types.FunctionType] = _enc_function
E.DISPATCH[types.CodeType] = _enc_code
