"""From a composed config to a ``CacheContext``: validate everything, then build, then probe.

``plan(cfg)`` does every check without I/O, so a bad value stops the run before any work:
the ``cache`` and ``policy`` nodes are re-typed through their schemas (this also catches keys
smuggled in with ``+key=``, which bypasses Hydra's schema check), then the backend and a trial
memoizer are dry-built, which runs the core's own validators (``parse_server``,
``MemcachedBackend``, ``Memoized``, ``RepetitionPolicy``, ``Serde``...). Their ``ConfigError``
messages start with the parameter name; ``_located`` rewrites that into the config path
(``policy.rtol_stderr=-1: must be a number >= 0``), so there is one rule per value, in the core.

``build_context(cfg)`` then probes the store once: an unreachable store is one warning and an
uncached run (``NullBackend``), or a ``BackendUnavailable`` when ``cache.strict`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ..backends import Backend, DiskBackend, MemcachedBackend, NullBackend, parse_server
from ..errors import BackendError, BackendUnavailable, ConfigError
from ..memoize import Memoized
from ..policy import RepetitionPolicy
from .context import CacheContext
from .schema import CACHE_SCHEMAS, CONTEXT_KEYS, POLICY_SCHEMAS

__all__ = [
    "PROBE_KEY",
    "Plan",
    "build_context",
    "disk_backend",
    "plan",
    "stochastic_memoizer",
]

log = logging.getLogger("expcache")

PROBE_KEY = "expcache-probe"
_LEADING_KEY = re.compile(r"^(?P<key>[A-Za-z_]\w*)(?P<rest>[=:].*)$", re.DOTALL)


# -- instantiate targets ---------------------------------------------------------------------
def disk_backend(dir: str | None = None, **options: Any) -> DiskBackend:
    """``cache=disk``: ``dir`` null or empty means the per-user cache directory."""
    return DiskBackend(dir or None, **options)


def stochastic_memoizer(
    fn: Callable[..., Any],
    backend: Backend,
    *,
    min_repetitions: int = 3,
    rtol_stderr: float = 0.1,
    atol_stderr: float = 0.0,
    max_repetitions: int | None = None,
    **options: Any,
) -> Memoized[..., Any]:
    """``policy=stochastic``: a memoizer that re-evaluates until the mean has converged."""
    repeat = RepetitionPolicy(
        min_repetitions=min_repetitions,
        rtol_stderr=rtol_stderr,
        atol_stderr=atol_stderr,
        max_repetitions=max_repetitions,
    )
    return Memoized(fn, backend, repeat=repeat, **options)


# -- validation ------------------------------------------------------------------------------
@dataclass
class Plan:
    """A validated config: typed options and built-but-unconnected objects."""

    seed: int
    cache: Any  # an instance of the cache option's schema (or a plain dict for custom targets)
    policy: Any
    backend: Backend
    factory: Callable[..., Memoized[..., Any]]
    cache_option: str
    policy_option: str

    def field(self, section: str, name: str, default: Any = None) -> Any:
        obj = getattr(self, section)
        if isinstance(obj, Mapping):
            return obj.get(name, default)
        return getattr(obj, name, default)


def _trial(*args: Any, **kwargs: Any) -> None:
    """Stands in for the task's callables: accepts any ``ignore_args``."""


def plan(cfg: DictConfig) -> Plan:
    """Validate ``cfg`` (no I/O, no work); raise ``ConfigError`` naming the config path."""
    for section, example in (("task", "demo"), ("cache", "disk"), ("policy", "deterministic")):
        if section not in cfg or cfg.get(section) is None:
            raise ConfigError(f"{section}: missing; choose an option, e.g. `{section}={example}`")
    seed = _resolved(cfg, "seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r}: must be an integer >= 0")
    target = _resolved(cfg, "task._target_") if isinstance(cfg.task, DictConfig) else None
    if not isinstance(target, str) or not target:
        raise ConfigError(
            "task._target_: missing; a task option names its callable, e.g. "
            "`_target_: expcache.tasks.demo.run_demo`"
        )

    cache_option, cache = _typed("cache", cfg.cache, CACHE_SCHEMAS)
    policy_option, policy = _typed("policy", cfg.policy, POLICY_SCHEMAS)
    sections = {"cache": cache, "policy": policy}
    for i, server in enumerate(_get(cache, "servers") or ()):
        try:
            parse_server(server)
        except ConfigError as exc:
            raise ConfigError(f"cache.servers[{i}]={server!r}: {_after_subject(exc)}") from None

    backend_spec = {k: v for k, v in _as_dict(cache).items() if k not in CONTEXT_KEYS}
    backend = _instantiate("cache", backend_spec, sections)
    if not isinstance(backend, Backend):
        raise ConfigError(
            f"cache._target_={backend_spec.get('_target_')!r}: built a "
            f"{type(backend).__name__}, expected an expcache.backends.Backend"
        )
    factory = _instantiate("policy", _as_dict(policy), sections)
    if not callable(factory):
        raise ConfigError(
            f"policy._target_: built a {type(factory).__name__}; a policy must build a memoizer "
            "factory (set `_partial_: true`)"
        )
    try:  # the core's own checks of every memoizer option, on a throwaway memoizer
        factory(
            _trial,
            NullBackend(),
            namespace=_get(cache, "namespace") or "",
            signing_key=_get(cache, "signing_key"),
            name="expcache-validation",
        )
    except ConfigError as exc:
        raise _located(exc, sections) from None
    except TypeError as exc:
        raise ConfigError(f"policy: cannot build a memoizer: {exc}") from None
    return Plan(seed, cache, policy, backend, factory, cache_option, policy_option)


def _resolved(cfg: DictConfig, path: str) -> Any:
    try:
        return OmegaConf.select(cfg, path, throw_on_resolution_failure=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: cannot be resolved: {_first_line(exc)}") from None


def _typed(section: str, node: Any, schemas: Mapping[str, type]) -> tuple[str, Any]:
    """Re-type ``node`` through its schema; return (option name, schema instance)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{section}: expected one of the options {sorted(schemas)}, got {node!r}")
    try:
        data = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{section}.{key}: cannot be resolved: {_first_line(exc)}") from None
    assert isinstance(data, dict)
    target = data.get("_target_")
    by_target = {getattr(cls, "_target_", None): (name, cls) for name, cls in schemas.items()}
    if target not in by_target:
        # A custom target (e.g. the user's own Backend subclass): no schema to check against;
        # the build step still checks what it produces.
        if not isinstance(target, str) or not target:
            raise ConfigError(
                f"{section}._target_: missing; choose an option ({', '.join(sorted(schemas))})"
            )
        return target, data
    option, cls = by_target[target]
    accepted = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), data)
        return option, OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        raise ConfigError(
            f"{section}.{exc.key}: unknown key for {section}={option}; accepted keys: "
            f"{', '.join(accepted)}"
        ) from None
    except ValidationError as exc:
        field_type = _field_type(cls, str(exc.key))
        raise ConfigError(
            f"{section}.{exc.key}={data.get(str(exc.key))!r}: expected {field_type} "
            f"({_first_line(exc)})"
        ) from None


def _instantiate(section: str, spec: dict[str, Any], sections: Mapping[str, Any]) -> Any:
    try:
        return instantiate(spec, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise _located(cause, sections) from None
        raise ConfigError(
            f"{section}._target_={spec.get('_target_')!r}: cannot be built: "
            f"{_one_line(cause or exc)}"
        ) from None


def _located(exc: ConfigError, sections: Mapping[str, Any]) -> ConfigError:
    """``"rtol_stderr=-1: ..."`` from the core -> ``"policy.rtol_stderr=-1: ..."``."""
    message = str(exc)
    match = _LEADING_KEY.match(message)
    if match:
        key = match.group("key")
        for section, options in sections.items():
            if key in _as_dict(options):
                return ConfigError(f"{section}.{key}{match.group('rest')}")
    return ConfigError(f"{next(iter(sections))}: {message}")


def _after_subject(exc: ConfigError) -> str:
    """``"server 'x': expected ..."`` -> ``"expected ..."`` (the path already names it)."""
    message = str(exc)
    head, sep, tail = message.partition(": ")
    return tail if sep and head.startswith("server") else message


def _field_type(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.type).replace("typing.", "")
    return "a valid value"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or repr(exc)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _get(obj: Any, name: str) -> Any:
    return _as_dict(obj).get(name)


# -- building --------------------------------------------------------------------------------
def build_context(cfg: DictConfig, *, validated: Plan | None = None) -> CacheContext:
    """Validate ``cfg``, build the backend once, probe it, and hand out a ``CacheContext``."""
    p = validated or plan(cfg)
    backend, info = _connect(p)
    policy = {"option": p.policy_option}
    policy.update({k: v for k, v in _as_dict(p.policy).items() if not k.startswith("_")})
    return CacheContext(
        backend,
        p.factory,
        namespace=p.field("cache", "namespace") or "",
        signing_key=p.field("cache", "signing_key"),
        policy=policy,
        backend_info=info,
    )


def _connect(p: Plan) -> tuple[Backend, dict[str, Any]]:
    backend = p.backend
    info: dict[str, Any] = {"option": p.cache_option, **backend.describe()}
    failures = _probe(backend)
    if not failures:
        return backend, info
    where = ", ".join(w for w, _ in failures)
    reason = failures[0][1]
    subject = "cache.servers" if isinstance(backend, MemcachedBackend) else "cache"
    if p.field("cache", "strict", False):
        backend.close()
        raise BackendUnavailable(
            f"{subject}: {backend.name} {where} is unreachable at start ({reason}); start it or "
            f"fix {subject}, or set cache.strict=false to run uncached"
        )
    total = len(backend.servers) if isinstance(backend, MemcachedBackend) else 1
    if len(failures) < total:
        log.warning(
            "expcache: %s %s unreachable at start (%s); using the other servers of the cluster",
            backend.name,
            where,
            reason,
        )
        info["unreachable_at_start"] = [w for w, _ in failures]
        return backend, info
    log.warning(
        "expcache: %s %s unreachable at start (%s); running UNCACHED "
        "(set cache.strict=true to fail instead)",
        backend.name,
        where,
        reason,
    )
    backend.close()
    return NullBackend(), {
        "option": p.cache_option,
        "backend": NullBackend.name,
        "configured": backend.describe(),
        "fallback": f"unreachable at start: {reason}",
    }


def _probe(backend: Backend) -> list[tuple[str, str]]:
    """One lookup per server (per store): [(where, why)] of those that failed."""
    if isinstance(backend, MemcachedBackend) and len(backend.servers) > 1:
        failures = []
        for host, port in backend.servers:
            single = MemcachedBackend(
                [(host, port)],
                connect_timeout=backend.connect_timeout,
                timeout=backend.timeout,
            )
            try:
                single.get(PROBE_KEY)
            except BackendError as exc:
                failures.append((f"{host}:{port}", str(exc)))
            finally:
                single.close()
        return failures
    try:
        backend.get(PROBE_KEY)
    except BackendError as exc:
        where = ",".join(backend.describe().get("servers", [])) or str(
            backend.describe().get("directory", backend.name)
        )
        return [(where, str(exc))]
    return []
