"""Structured-config schemas derived from the constructors: one source of truth per option.

Every option of the ``cache``, ``policy`` and ``task`` groups (and of the valuation task's
``data``, ``scorer`` and ``parallel``) is a keyword parameter of a constructor: its name, its
annotation and its default are read from the signature (``nodes.keyword_parameters``) and
turned into a dataclass that Hydra's ConfigStore holds. So Hydra rejects unknown keys and
wrong types while composing, ``--help`` and ``--cfg job`` show every option with its real
default, the YAML files state only what they change, and the README's option lists are
generated from the same ``Schema`` objects (``markdown()``; a test compares them). Ranges are
never written here: the plan dry-builds the objects, so the constructors' own validators
(``expcache._validate``) run before any work.

Why a small generator rather than hydra-zen's ``builds(..., populate_full_signature=True)``
(tried on these constructors, hydra-zen 0.17): it dropped options a constructor passes on with
``**kwargs`` to a base class (the backends' ``breaker_*`` did, before they became explicit
parameters); it keeps
``tls_context`` (an ``ssl.SSLContext`` YAML cannot express) and types ``str | None`` options
as ``Any``; and one node cannot combine two signatures (the stochastic policy is
``Memoized``'s options plus ``RepetitionPolicy``'s). The generator here follows ``**kwargs``
into the base class, keeps only what YAML can write (``bytes`` and object members of a union
are dropped; a parameter left with nothing writable is Python-only and listed in
``Schema.python_only``), maps tuples to lists, types ``servers`` (a string, a pair or a list
in Python) as a list of ``host:port`` strings with its default normalised by the core's own
``parse_server``, and merges signatures. It is about a hundred lines and adds no dependency.

Nodes whose keys depend on a target the user picks (a scikit-learn model, a pyDVL method, the
task's ``utility``) are *open*: composition accepts any key (no ``+`` needed for
``model.C=2``), and the plan checks them against the target's signature instead, importing
scikit-learn/pyDVL only then -- not for ``--help`` or ``task=demo``.

The dataclasses live in this module's namespace under their class names, because configs are
pickled (joblib launcher) with a reference to their schema class.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from ..backends import DiskBackend, MemcachedBackend, MemoryBackend, NullBackend, parse_server
from ..memoize import Memoized
from ..policy import RepetitionPolicy
from .nodes import is_node, keyword_parameters

__all__ = [
    "CACHE_MEMO_OPTIONS",
    "CACHE_SCHEMAS",
    "OPEN_SCHEMA",
    "POLICY_SCHEMAS",
    "SET_BY_APP",
    "Option",
    "Schema",
    "all_schemas",
    "derive",
    "register",
    "yaml_type",
]

# Memoized's parameters that the app or the task sets (the function, the backend built from
# `cache`, the repetition policy built from `policy`, the per-function name and signature).
SET_BY_APP = ("fn", "backend", "repeat", "signature", "name")
# Memoized's options that belong to the store's users, so they sit in the `cache` node.
CACHE_MEMO_OPTIONS = ("namespace", "signing_key")
# Options that only one of the two policies uses.
_REPEATED_ONLY = ("max_cas_retries",)
_DETERMINISTIC_ONLY = ("time_threshold", "lease", "lease_ttl", "lease_max_wait")
OPEN_SCHEMA = "expcache_target_schema"

_NOTHING: Any = object()


@dataclass(frozen=True)
class Option:
    """One option of a node: YAML-facing type, default (``MISSING`` if required), origin."""

    name: str
    type: Any
    default: Any
    owner: str

    @property
    def open(self) -> bool:
        """Its default is a ``_target_`` node: any key of the chosen target is allowed."""
        return is_node(self.default)


def yaml_type(hint: Any) -> Any:
    """The annotation OmegaConf checks for ``hint``; ``None`` if YAML cannot write it."""
    if hint is Any or hint is inspect.Parameter.empty or isinstance(hint, typing.TypeVar):
        return Any
    if hint in (bool, int, float, str):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        kept = {yaml_type(m) for m in args if m is not type(None)} - {None}
        if not kept:
            return None
        inner = kept.pop() if len(kept) == 1 else Any
        optional = type(None) in args and inner is not Any
        return typing.Optional[inner] if optional else inner  # noqa: UP045
    if origin is typing.Literal:
        kinds = {type(a) for a in args}
        return kinds.pop() if len(kinds) == 1 and kinds <= {str, int} else Any
    container = origin if origin is not None else hint
    if container in (list, tuple, Sequence, Iterable, Collection, set, frozenset):
        items = {yaml_type(a) for a in args if a is not Ellipsis}
        inner = items.pop() if len(items) == 1 else Any
        return typing.List[Any if inner is None else inner]  # type: ignore[misc]  # noqa: UP006
    if container in (dict, Mapping):
        inner = yaml_type(args[1]) if len(args) == 2 else Any
        return typing.Dict[str, Any if inner is None else inner]  # type: ignore[misc]  # noqa: UP006
    return None


def _yaml_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return MISSING
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        items = {str(k): _yaml_default(v) for k, v in value.items()}
        return _NOTHING if _NOTHING in items.values() else items
    if isinstance(value, (list, tuple)):
        listed = [_yaml_default(v) for v in value]
        return _NOTHING if any(v is _NOTHING for v in listed) else listed
    return _NOTHING


def _servers(default: Any) -> list[str]:
    """MemcachedBackend's default server(s) as "host:port" strings, via the core's parser.

    The default may be one spec (a string or a ``(host, port)`` pair) or a sequence of specs
    (``("127.0.0.1:11211",)``): a pair is told from a one- or two-server tuple by its int port,
    as ``server_list`` does."""
    pair = isinstance(default, tuple) and len(default) == 2 and type(default[1]) is int
    specs = [default] if isinstance(default, str) or pair else list(default)
    out = []
    for spec in specs:
        host, port = parse_server(spec)
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


# Parameters whose Python type YAML cannot express as is: (owner, name) -> (type, default).
_ADAPTERS: dict[tuple[Any, str], tuple[Any, Callable[[Any], Any]]] = {
    (MemcachedBackend, "servers"): (typing.List[str], _servers),  # noqa: UP006
}


def derive(
    obj: Callable[..., Any],
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> tuple[list[Option], list[str]]:
    """The YAML-writable options of ``obj``'s keyword parameters, and the Python-only ones."""
    params, _ = keyword_parameters(obj)
    options: list[Option] = []
    python_only: list[str] = []
    for p in params.values():
        if p.name in exclude or (only is not None and p.name not in only):
            continue
        owner = f"{getattr(p.owner, '__module__', '?')}.{getattr(p.owner, '__qualname__', '?')}"
        adapter = _ADAPTERS.get((p.owner, p.name))
        if adapter is not None:
            options.append(Option(p.name, adapter[0], adapter[1](p.default), owner))
            continue
        kind, default = yaml_type(p.annotation), _yaml_default(p.default)
        if kind is None or default is _NOTHING:
            python_only.append(p.name)
            continue
        options.append(Option(p.name, kind, default, owner))
    return options, python_only


def public_path(obj: Any) -> str:
    """``expcache.backends.DiskBackend`` rather than ``expcache.backends.disk.DiskBackend``:
    the shortest module path that exports the object."""
    name: str = obj.__qualname__
    parts = str(obj.__module__).split(".")
    for n in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:n]))
        if module is not None and getattr(module, name, None) is obj:
            return f"{module.__name__}.{name}"
    return f"{obj.__module__}.{name}"


@dataclass(frozen=True)
class Schema:
    """One structured config: stored as ``name`` and extended by YAML options
    (``defaults: [/<name>@_here_, _self_]``)."""

    group: str
    key: str
    class_name: str
    target: str | None
    options: tuple[Option, ...]
    python_only: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        group: str,
        key: str,
        *sources: tuple[Callable[..., Any], Mapping[str, Any]],
        target: Any = None,
        class_name: str | None = None,
    ) -> Schema:
        """The options of every ``(callable, derive-kwargs)`` source, in order."""
        options: dict[str, Option] = {}
        python_only: list[str] = []
        for obj, kwargs in sources:
            found, dropped = derive(obj, **kwargs)
            for option in found:
                options.setdefault(option.name, option)
            python_only += dropped
        path = public_path(target) if target is not None else None
        name = class_name or f"{getattr(target, '__name__', key.title())}Conf"
        return cls(group, key, name, path, tuple(options.values()), tuple(python_only))

    @property
    def name(self) -> str:
        return f"expcache_{self.group}_{self.key}_schema"

    def dataclass(self) -> type:
        """The dataclass (created once, kept in this module so that configs pickle)."""
        module = sys.modules[__name__]
        existing = getattr(module, self.class_name, None)
        if isinstance(existing, type) and getattr(existing, "__schema__", None) == self:
            return existing
        fields: list[tuple[str, Any, Any]] = []
        if self.target is not None:
            fields.append(("_target_", str, dataclasses.field(default=self.target)))
        for o in self.options:
            default = o.default
            if isinstance(default, (list, dict)):
                made = dataclasses.field(default_factory=_copier(default))
            else:
                made = dataclasses.field(default=default)
            fields.append((o.name, o.type, made))
        made_cls = dataclasses.make_dataclass(self.class_name, fields)
        made_cls.__module__ = __name__
        made_cls.__schema__ = self  # type: ignore[attr-defined]
        setattr(module, self.class_name, made_cls)
        return made_cls

    def node(self) -> DictConfig:
        cfg: DictConfig = OmegaConf.structured(self.dataclass())
        for o in self.options:
            if o.open:
                OmegaConf.set_struct(cfg[o.name], False)
        return cfg

    def markdown(self) -> str:
        """The README's list of this schema's options (generated; a test compares)."""
        lines = ["| option | type | default | defined by |", "|---|---|---|---|"]
        for o in self.options:
            owner = o.owner.rsplit(".", 1)[-1]
            row = f"| `{o.name}` | {_type_words(o.type)} | {_default_words(o)} | `{owner}` |"
            lines.append(row)
        return "\n".join(lines)


def _copier(value: Any) -> Callable[[], Any]:
    import copy

    return lambda: copy.deepcopy(value)


def _type_words(kind: Any) -> str:
    if kind is Any:
        return "any"
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        return " \\| ".join(_type_words(a) for a in args).replace("NoneType", "null")
    if origin is list:
        return f"list[{_type_words(args[0])}]"
    if origin is dict:
        return "mapping"
    return getattr(kind, "__name__", str(kind)).replace("NoneType", "null")


def _default_words(o: Option) -> str:
    if o.default is MISSING:
        return "required"
    if o.open:
        return f"`{o.default['_target_']}`"
    return f"`{_yaml_words(o.default)}`"


def _yaml_words(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or "''"
    if isinstance(value, float) and math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_words(v) for v in value) + "]"
    return repr(value)


# -- the schemas ---------------------------------------------------------------------------
def _connect_options() -> Callable[..., Any]:
    from .build import connect

    return connect


def cache_schema(key: str, backend: type) -> Schema:
    """A backend's options, plus the memoizer options of its users and the app's ``strict``."""
    return Schema.of(
        "cache",
        key,
        (backend, {}),
        (Memoized, {"only": CACHE_MEMO_OPTIONS}),
        (_connect_options(), {"only": ("strict",)}),
        target=backend,
    )


_MEMO_POLICY = SET_BY_APP + CACHE_MEMO_OPTIONS


def _policy_schemas() -> dict[str, Schema]:
    return {
        "deterministic": Schema.of(
            "policy",
            "deterministic",
            (Memoized, {"exclude": _MEMO_POLICY + _REPEATED_ONLY}),
            class_name="DeterministicPolicyConf",
        ),
        "stochastic": Schema.of(
            "policy",
            "stochastic",
            (RepetitionPolicy, {}),
            (Memoized, {"exclude": _MEMO_POLICY + _DETERMINISTIC_ONLY}),
            class_name="StochasticPolicyConf",
        ),
    }


def _cache_schemas() -> dict[str, Schema]:
    backends = {"disk": DiskBackend, "memcached": MemcachedBackend}
    backends.update({"memory": MemoryBackend, "none": NullBackend})
    return {key: cache_schema(key, cls) for key, cls in backends.items()}


CACHE_SCHEMAS: dict[str, Schema] = {}
POLICY_SCHEMAS: dict[str, Schema] = {}


def all_schemas() -> list[Schema]:
    """The app's schemas and every task's (each task package lists its own)."""
    from .tasks import task_schemas

    if not CACHE_SCHEMAS:
        CACHE_SCHEMAS.update(_cache_schemas())
        POLICY_SCHEMAS.update(_policy_schemas())
    return [*CACHE_SCHEMAS.values(), *POLICY_SCHEMAS.values(), *task_schemas()]


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent: a re-store replaces the node)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for schema in all_schemas():
        cs.store(name=schema.name, node=schema.node())
    open_node = OmegaConf.create({})
    OmegaConf.set_struct(open_node, False)
    cs.store(name=OPEN_SCHEMA, node=open_node)
