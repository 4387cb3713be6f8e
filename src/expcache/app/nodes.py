"""Config nodes with a ``_target_``, checked against the target's own signature before anything
is built, and errors that say which key was wrong.

Why signatures: a target's keyword parameters (names, annotations, defaults) are the single
source of truth for what its node may contain. ``check`` binds a node to them without running
the target: an unknown key (a typo, or one smuggled in with ``+key=`` past Hydra's schema) is
rejected with the accepted names and the closest match, a missing required parameter is
named, and -- for targets that do not validate their own arguments (third-party classes,
functions that can only be called later) -- each value is checked against its annotation, so
``method.truncation.rtol=abc`` fails at plan time instead of deep inside a valuation.

expcache's own classes are not type-checked here: their constructors run the core's
validators (``expcache._validate``) when the plan dry-builds them, and checking twice would
mean two rules for one value.

Errors are ``ConfigError``s whose ``param`` is relative to the node (``truncation.rtol``);
whoever knows where the node sits prefixes it (``exc.located("method")``), never by parsing a
message. ``keyword_parameters`` is shared with ``schemas``, which derives the structured
configs from the same signatures.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ExpcacheError

__all__ = [
    "Param",
    "build",
    "check",
    "conforms",
    "describe_type",
    "is_node",
    "keyword_parameters",
    "qualname",
    "reject_unknown",
    "renamed",
    "target",
    "under",
]

# Hydra's instantiate keys that make no sense for nodes expcache builds itself.
_UNSUPPORTED = frozenset({"_args_", "_partial_"})


@dataclass(frozen=True)
class Param:
    """One keyword parameter: its resolved annotation (``Any`` when unknown) and default."""

    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    owner: Callable[..., Any]

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def is_node(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def target(node: Mapping[str, Any]) -> Callable[..., Any]:
    """The object ``node['_target_']`` names, looked up through Hydra's ``instantiate`` so that
    Hydra's target restrictions (no ``os.system``, ...) apply to expcache's nodes too."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    path = node.get("_target_")
    if not isinstance(path, str) or not path:
        raise ConfigError(
            param="_target_", value=path, expected="the dotted path of a class or function"
        )
    try:
        factory = instantiate({"_target_": path, "_partial_": True})
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            " ".join(str(cause).split()) or type(cause).__name__,
            param="_target_",
            value=path,
            expected="an importable class or function",
        ) from None
    assert isinstance(factory, functools.partial)
    return factory.func


def _hints(fn: Any) -> dict[str, Any]:
    """Resolved annotations; one that does not resolve (a ``TYPE_CHECKING`` import) is left
    out, not the whole function."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    out: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what get_type_hints does, per name
            except Exception:
                continue
        out[name] = annotation
    return out


def keyword_parameters(obj: Callable[..., Any]) -> tuple[dict[str, Param], bool]:
    """The parameters a node may set, and whether any other keyword is accepted too.

    A class's ``**kwargs`` is followed into the next ``__init__`` of its MRO (expcache's
    backends pass ``**breaker`` on to ``Backend.__init__``), so those options are as visible
    as the class's own; a function's ``**kwargs`` accepts anything.
    """
    out: dict[str, Param] = {}
    chain: list[Any] = (
        [c for c in obj.__mro__ if "__init__" in vars(c) and c is not object]
        if isinstance(obj, type)
        else [obj]
    )
    if not chain:  # a class without an __init__ of its own anywhere: no parameters
        return out, False
    for owner in chain:
        fn = vars(owner)["__init__"] if isinstance(owner, type) else owner
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return out, True
        hints = _hints(fn)
        more = False
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL):
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
                continue
            out.setdefault(p.name, Param(p.name, hints.get(p.name, Any), p.default, owner))
        if not more:
            return out, False
        if not isinstance(obj, type):
            return out, True
    return out, True


def reject_unknown(keys: Iterable[str], accepted: Collection[str], owner: str) -> None:
    """``ConfigError`` for the first key not in ``accepted``, with the closest match."""
    for key in keys:
        if key in accepted:
            continue
        close = difflib.get_close_matches(key, list(accepted), n=1)
        raise ConfigError(
            param=key,
            expected=f"one of the parameters of {owner}: {', '.join(sorted(accepted))}",
            hint=f"did you mean {close[0]!r}?" if close else None,
        )


def check(
    node: Mapping[str, Any],
    *,
    offered: Collection[str] = (),
    recursive: bool = True,
) -> Callable[..., Any]:
    """Bind ``node`` to its target's signature without building it; return the target.

    ``offered``: parameters the caller passes itself (live objects such as the model): the
    node must not set them and they count as given. ``recursive``: nested ``_target_`` nodes
    are checked and dry-built too (they are built with the node); ``False`` leaves them to
    the target, which receives them as plain mappings.
    """
    fn = target(node)
    owner = getattr(fn, "__qualname__", repr(fn))
    params, open_ = keyword_parameters(fn)
    for key in node:
        if key in _UNSUPPORTED:
            raise ConfigError(param=key, expected="not supported in expcache's config nodes")
    keys = [k for k in node if not k.startswith("_")]
    for key in keys:
        if key in offered:
            raise ConfigError(param=key, expected=f"not set in the config: expcache passes {key}")
    if not open_:
        reject_unknown(keys, params, owner)
    for p in params.values():
        if p.required and p.name not in node and p.name not in offered:
            raise ConfigError(param=p.name, expected=f"a value (required by {owner})")
    typed = not (isinstance(fn, type) and fn.__module__.startswith("expcache."))
    for key in keys:
        value = node[key]
        hint = params[key].annotation if key in params else Any
        if recursive and is_node(value):
            _check_nested(key, value)
        elif recursive and _is_node_list(value):
            for i, item in enumerate(value):
                _check_nested(f"{key}[{i}]", item)
        elif typed and not conforms(value, hint):
            raise ConfigError(param=key, value=value, expected=describe_type(hint))
    return fn


def _check_nested(key: str, node: Mapping[str, Any]) -> None:
    try:
        fn = check(node)
        if isinstance(fn, type):  # a dry build: the class's own argument checks run now
            build(node)
    except ConfigError as exc:
        raise under(exc, key) from None


def under(exc: ConfigError, key: str) -> ConfigError:
    """``exc`` about the node at ``key``: its parameter moves under ``key``; an error about
    no parameter (a third-party constructor's ``ValueError``) becomes one about ``key``."""
    if exc.param is None:
        return ConfigError(exc.detail or str(exc), param=key, hint=exc.hint)
    return exc.located(key)


def _is_node_list(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(is_node(v) for v in value)
    )


def build(
    node: Mapping[str, Any],
    *,
    recursive: bool = True,
    offer: Mapping[str, Any] | None = None,
    **live: Any,
) -> Any:
    """Call the node's target with its keys (nested nodes built first when ``recursive``),
    plus ``live`` objects, plus those of ``offer`` that its signature names.

    Anything but an ``ExpcacheError`` raised by the target becomes a ``ConfigError`` about the
    node: at this point only the configuration can be wrong (nothing has been computed).
    """
    fn = target(node)
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("_"):
            continue
        try:
            if recursive and is_node(value):
                value = build(value)
            elif recursive and _is_node_list(value):
                value = [build(v) for v in value]
        except ConfigError as exc:
            raise under(exc, key) from None
        kwargs[key] = value
    if offer:
        params, open_ = keyword_parameters(fn)
        kwargs.update({k: v for k, v in offer.items() if open_ or k in params})
    kwargs.update(live)
    try:
        return fn(**kwargs)
    except ExpcacheError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot build {getattr(fn, '__qualname__', fn)}: {_first_line(exc)}"
        ) from exc


def renamed(exc: ConfigError, param: str) -> ConfigError:
    """The same error about another parameter path (``model.C`` for the task's ``model.C``)."""
    parts: dict[str, Any] = {"expected": exc.expected, "hint": exc.hint, "secret": exc.secret}
    if exc.has_value:
        parts["value"] = exc.value
    return ConfigError(exc.detail, param=param, **parts)


# -- annotations -----------------------------------------------------------------------------
def _members(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def conforms(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits ``hint``; unknown kinds of hints always fit."""
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, typing.TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    members = _members(hint)
    if members is not None:
        return any(conforms(value, m) for m in members)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin if origin is not None else hint
    if container in (list, tuple, Sequence, Iterable, Collection, set, frozenset):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(conforms, value, args))
        inner = args[0] if args else Any
        return all(conforms(v, inner) for v in value)
    if container in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        inner = args[1] if len(args) == 2 else Any
        return all(conforms(v, inner) for v in value.values())
    if isinstance(hint, type):
        # A class no plain config value can be (a model, a Generator): only nodes build those,
        # and they are checked on their own.
        return isinstance(value, hint) or not isinstance(
            value, (bool, int, float, str, list, tuple, Mapping)
        )
    return True


def describe_type(hint: Any) -> str:
    """``int | None`` -> ``an integer or null``: the words of the error messages."""
    if hint is None or hint is type(None):
        return "null"
    members = _members(hint)
    if members is not None:
        return " or ".join(dict.fromkeys(describe_type(m) for m in members))
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    container = origin if origin is not None else hint
    if container in (list, tuple, Sequence, Iterable, Collection, set, frozenset):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)}: [{', '.join(describe_type(a) for a in args)}]"
        return f"a list of {describe_type(args[0])}" if args else "a list"
    if container in (dict, Mapping):
        return "a mapping"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
