"""From a composed config to a ``CacheContext``: check everything, dry-build it, then probe.

``plan(cfg)`` does every check before any work and without touching a store: the config is
resolved (an interpolation that fails names its key), top-level keys are matched against the
sections and the groups the task refers to, and then each section is dry-built by the code
that owns its rules -- the backend by its constructor, the policy by ``RepetitionPolicy`` and
a throwaway ``Memoized`` on a ``NullBackend``, the task by its own constructor (the valuation
task checks its data, model, scorer, method and parallel groups the same way). The core's
``ConfigError`` carries the parameter it is about; ``context.relocate`` puts it under its
section (``cache.timeout``), and task errors are traced back through the task's
interpolations to where the user sets the value (``model.C``, not ``task.model.C``).

``build_context(plan)`` then asks the backend to probe itself (``probe()``: one harmless
lookup per node, with the backend's own settings, TLS included): an unreachable store is one
warning and an uncached run, or ``BackendUnavailable`` with ``cache.strict``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from .. import _validate
from ..backends import Backend, NullBackend
from ..errors import BackendUnavailable, ConfigError
from ..memoize import Memoized
from ..policy import RepetitionPolicy
from . import nodes
from .context import CacheContext, MemoPolicy, relocate
from .schemas import CACHE_MEMO_OPTIONS, SET_BY_APP

__all__ = ["SECTIONS", "Plan", "build_context", "connect", "plan"]

log = logging.getLogger("expcache")

SECTIONS = ("seed", "task", "cache", "policy")
_EXAMPLES = {"task": "demo", "cache": "disk", "policy": "deterministic"}
# What run() passes to a task, besides its options.
TASK_ARGUMENTS = ("ctx", "output_dir", "seed")
# ${name} or ${name.path} (not a resolver call such as ${oc.env:X}): a reference to a node.
_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_]\w*)(?:\.[\w.\[\]]*)?\s*\}")


@dataclass(frozen=True)
class Plan:
    """A checked config: everything built, nothing connected or run."""

    seed: int
    backend: Backend
    policy: MemoPolicy
    task: Callable[..., Mapping[str, Any]]  # task(ctx=..., output_dir=..., seed=...)
    task_target: str
    namespace: str = ""
    signing_key: str | None = None
    strict: bool = False


def _trial(*args: Any, **kwargs: Any) -> None:
    """Stands in for the task's callables in the dry-built memoizer."""


def plan(cfg: DictConfig) -> Plan:
    """Check and dry-build ``cfg`` (no I/O, no work); raise ``ConfigError`` naming the key."""
    root = _resolved(cfg)
    cache = _section(root, "cache")
    policy_node = _section(root, "policy")
    task_node = _section(root, "task")
    seed = _validate.integer("seed", root.get("seed", 0), ge=0)
    backend, memo, strict = _cache(cache)
    schema = getattr(OmegaConf.get_type(cfg.policy), "__schema__", None)
    policy = _policy(policy_node, memo, [o.name for o in schema.options] if schema else None)
    raw_task = OmegaConf.to_container(cfg.task, resolve=False)
    assert isinstance(raw_task, dict)
    task = _task(task_node, {str(k): v for k, v in raw_task.items()})
    _check_top_level(cfg, root)  # last: a task error explains an unreferenced group better
    return Plan(
        seed=seed,
        backend=backend,
        policy=policy,
        task=task,
        task_target=str(task_node.get("_target_")),
        namespace=memo.get("namespace", ""),
        signing_key=memo.get("signing_key"),
        strict=strict,
    )


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        raise ConfigError(param=exc.full_key or "?", expected="a value (it is required)") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(
            str(exc.msg).splitlines()[0] if exc.msg else type(exc).__name__,
            param=exc.full_key or "?",
            expected="a value that resolves",
        ) from None
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _check_top_level(cfg: DictConfig, root: Mapping[str, Any]) -> None:
    """Top-level keys are the sections and the groups they refer to (``task.data: ${data}``):
    anything else is a typo that ``+key=`` slipped past Hydra (``+sed=1``)."""
    known = set(SECTIONS)
    for section in ("task", "cache", "policy"):
        raw = OmegaConf.to_yaml(cfg[section], resolve=False)
        known.update(_REFERENCE.findall(raw))
    try:
        nodes.reject_unknown(list(root), known, "the expcache config")
    except ConfigError as exc:
        raise ConfigError(
            param=exc.param,
            expected=f"a top-level key: {', '.join(sorted(known))}",
            hint=exc.hint,
        ) from None


def _section(root: Mapping[str, Any], name: str) -> dict[str, Any]:
    node = root.get(name)
    if not isinstance(node, dict):
        raise ConfigError(
            param=name,
            value=node,
            expected="an option of the group",
            hint=f"choose one, e.g. `{name}={_EXAMPLES[name]}`",
        )
    return node


def _cache(node: dict[str, Any]) -> tuple[Backend, dict[str, Any], bool]:
    memo = {k: node[k] for k in CACHE_MEMO_OPTIONS if k in node}
    default_strict = inspect.signature(connect).parameters["strict"].default
    try:
        strict = _validate.boolean("strict", node.get("strict", default_strict))
    except ConfigError as exc:
        raise exc.located("cache") from None
    spec = {k: v for k, v in node.items() if k not in CACHE_MEMO_OPTIONS and k != "strict"}
    accepted = {"_target_", *spec}
    try:
        nodes.check(spec)
        accepted.update(nodes.keyword_parameters(nodes.target(spec))[0])
        backend = nodes.build(spec)
    except ConfigError as exc:
        raise relocate(exc, {"cache": accepted}, default="cache") from None
    if not isinstance(backend, Backend):
        raise ConfigError(
            param="cache._target_",
            value=spec.get("_target_"),
            expected=f"an expcache.backends.Backend (it built a {type(backend).__name__})",
        )
    return backend, memo, strict


def _policy(
    node: dict[str, Any], cache_memo: Mapping[str, Any], accepted: list[str] | None
) -> MemoPolicy:
    """``accepted``: the options of the node's schema (so that ``+policy.min_repetitions``
    cannot turn the deterministic policy into half a stochastic one); without a schema,
    anything ``Memoized`` and ``RepetitionPolicy`` take."""
    memo_params = nodes.keyword_parameters(Memoized)[0]
    repeat_params = nodes.keyword_parameters(RepetitionPolicy)[0]
    if accepted is None:
        accepted = sorted(
            (set(memo_params) - set(SET_BY_APP) - set(CACHE_MEMO_OPTIONS)) | set(repeat_params)
        )
    keys = [k for k in node if not k.startswith("_")]
    try:
        nodes.reject_unknown(keys, accepted, "the policy")
    except ConfigError as exc:
        raise exc.located("policy") from None
    repeated = {k: node[k] for k in keys if k in repeat_params}
    options = {k: node[k] for k in keys if k not in repeat_params}
    # The cache's memoizer options first, then the policy's, each on a throwaway memoizer:
    # a core error is then about one section (or about the environment, left as it is).
    try:
        Memoized(_trial, NullBackend(), name="expcache-plan", **cache_memo)
    except ConfigError as exc:
        raise relocate(exc, {"cache": CACHE_MEMO_OPTIONS}, default="cache") from None
    try:
        repeat = RepetitionPolicy(**repeated) if repeated else None
        Memoized(_trial, NullBackend(), repeat=repeat, name="expcache-plan", **options)
    except ConfigError as exc:
        raise relocate(exc, {"policy": keys}, default="policy") from None
    return MemoPolicy(options, repeat)


def _task(node: dict[str, Any], raw: Mapping[str, Any]) -> Callable[..., Mapping[str, Any]]:
    """A class task is built now (its constructor checks and dry-builds its options); a
    function task is bound to its signature now and called by ``run``."""
    task: Any
    try:
        fn = nodes.target(node)
        if isinstance(fn, type):
            nodes.check(node, recursive=False)
            task = nodes.build(node, recursive=False)
        else:
            nodes.check(node, offered=TASK_ARGUMENTS, recursive=False)
            task = functools.partial(nodes.build, node, recursive=False)
    except ConfigError as exc:
        raise _task_error(exc, raw) from None
    if not callable(task):
        raise ConfigError(
            param="task._target_",
            value=node.get("_target_"),
            expected="a task: a function of (ctx, output_dir, seed, **options), or a class "
            "whose instances are called so",
        )
    return cast(Callable[..., Mapping[str, Any]], task)


def _task_error(exc: ConfigError, raw: Mapping[str, Any]) -> ConfigError:
    """``model.C`` of the task, whose ``model`` is ``${model}``, is the user's ``model.C``."""
    if exc.param is None:
        return exc.located("task")
    head, dot, rest = exc.param.partition(".")
    value = raw.get(head.split("[", 1)[0])
    if isinstance(value, str):
        match = _REFERENCE.fullmatch(value.strip())
        if match:
            inner = value.strip()[2:-1].strip()
            return nodes.renamed(exc, inner + (dot + rest if dot else ""))
    return exc.located("task")


# -- connecting --------------------------------------------------------------------------------
def build_context(p: Plan) -> CacheContext:
    """Probe ``p``'s backend once and hand out the run's ``CacheContext``."""
    backend, info = connect(p.backend, strict=p.strict)
    return CacheContext(
        backend,
        p.policy,
        namespace=p.namespace,
        signing_key=p.signing_key,
        backend_info=info,
    )


def connect(backend: Backend, *, strict: bool = False) -> tuple[Backend, dict[str, Any]]:
    """Probe ``backend``: itself if every node answers (or some do); otherwise a warning and a
    ``NullBackend`` (uncached run), or ``BackendUnavailable`` when ``strict``.

    ``strict`` is the ``cache.strict`` option: this signature is its definition.
    """
    info: dict[str, Any] = {"option": backend.name, **backend.describe()}
    if strict:  # recorded: later start-up checks (a Ray cluster's hosts) honour it too
        info["strict"] = True
    failures = backend.probe()
    if not failures:
        return backend, info
    where = ", ".join(w for w, _ in failures)
    reason = failures[0][1]
    if strict:
        backend.close()
        raise BackendUnavailable(
            f"cache: {backend.name} {where} is unreachable at start ({reason}); start it or "
            "fix the cache options, or set cache.strict=false to run uncached"
        )
    nodes_total = len(backend.describe().get("servers") or [where])
    if len(failures) < nodes_total:
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
        "option": backend.name,
        "backend": NullBackend.name,
        "configured": backend.describe(),
        "fallback": f"unreachable at start: {reason}",
    }
