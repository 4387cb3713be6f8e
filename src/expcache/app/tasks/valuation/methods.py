"""The pyDVL valuation method of the task: checked at plan time, built at run time.

A method node names a pyDVL class (``TMCShapleyValuation``, ...). It cannot be dry-built: it
needs the run's cached utility. So the plan binds it to the class's signature
(``nodes.check``: unknown keys, pyDVL's annotations), dry-builds its stopping criteria and
truncation policy (pyDVL's constructors check their arguments), and applies the few ranges
pyDVL takes without checking (``_METHOD_RULES``).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping
from typing import Any

from .... import _validate
from ....errors import ConfigError
from ... import nodes

__all__ = ["METHOD_ARGUMENTS", "check_method", "describe", "make_method", "stopping"]

# What the task passes to a pyDVL method itself (never set in the config).
METHOD_ARGUMENTS = ("utility", "progress")


def _batch_size(value: Any) -> Any:
    return _validate.integer("batch_size", value, ge=1)


def _seed(value: Any) -> Any:
    return _validate.integer("seed", value, ge=0, allow_none=True, hint="null: the run's seed")


# Ranges pyDVL's methods take but do not check (a batch_size of 0 would never finish): the one
# place these rules are written. Checked at plan time for every method that has the parameter.
_METHOD_RULES = {"batch_size": _batch_size, "seed": _seed}


def check_method(node: Mapping[str, Any]) -> None:
    """The method's keys against its class (``utility`` and ``progress`` are the task's), and
    every stopping criterion in ``is_done`` (one node, or a list of them: any stops)."""
    conf = dict(node)
    is_done = conf.pop("is_done", None)
    given = ("is_done",) if is_done is not None else ()
    fn = nodes.check(conf, offered=(*METHOD_ARGUMENTS, *given))
    params, open_ = nodes.keyword_parameters(fn)
    for key, rule in _METHOD_RULES.items():
        if key in conf and key in params:
            rule(conf[key])
    if is_done is None:
        if "is_done" in params and params["is_done"].required:
            raise ConfigError(
                param="is_done",
                expected="a stopping criterion node (or a list of them)",
                hint="e.g. {_target_: pydvl.valuation.stopping.MaxUpdates, n_updates: 50}",
            )
        return
    if not open_:
        nodes.reject_unknown(["is_done"], params, getattr(fn, "__qualname__", str(fn)))
    criteria = is_done if isinstance(is_done, list) else [is_done]
    for i, criterion in enumerate(criteria):
        where = f"is_done[{i}]" if isinstance(is_done, list) else "is_done"
        if not nodes.is_node(criterion):
            raise ConfigError(
                param=where,
                value=criterion,
                expected="a stopping criterion node with _target_ (or a list of them)",
                hint="e.g. {_target_: pydvl.valuation.stopping.MaxUpdates, n_updates: 50}",
            )
        try:
            nodes.check(criterion)
            nodes.build(criterion)  # a dry build: pyDVL's own checks run now
        except ConfigError as exc:
            raise nodes.under(exc, where) from None


def stopping(node: Any) -> Any:
    """One criterion, or a list of them combined with ``|`` (stop when any says so)."""
    if isinstance(node, list):
        return functools.reduce(operator.or_, (nodes.build(n) for n in node))
    return nodes.build(node)


# The progress bar's description: pyDVL's is str(method) (~150 characters), which pushes the
# bar and its ETA off a 120-column terminal. Ours says what runs on how much, within budget.
_MAX_DESCRIPTION = 48
_KEYWORD = re.compile(r"\b\w+=")


def describe(method_class: Any, n_points: int | None, is_done: Any) -> str:
    """``TMCShapley, 100 points, MaxUpdates(100)``: method, points, budget (<= 48 chars)."""
    name = getattr(method_class, "__name__", str(method_class))
    name = name.removesuffix("Valuation") or name
    parts = [name]
    if n_points is not None:
        parts.append(f"{n_points} points")
    if is_done is not None:
        parts.append(_KEYWORD.sub("", str(is_done)).replace(" OR ", "|").replace(" AND ", "&"))
    text = ", ".join(parts)
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."


def make_method(
    node: Mapping[str, Any],
    utility: Any,
    *,
    seed: int,
    progress: bool | None,
    n_points: int | None = None,
) -> Any:
    """A pyDVL valuation method on ``utility``: ``seed: null`` takes the run's seed,
    ``progress`` None shows pyDVL's bar only on a terminal, with a short description."""
    conf = dict(node)
    is_done = conf.pop("is_done", None)
    cls = nodes.target(conf)
    params, _ = nodes.keyword_parameters(cls)
    live: dict[str, Any] = {"utility": utility}
    if is_done is not None:
        live["is_done"] = stopping(is_done)
    if "seed" in params and conf.get("seed") is None:
        conf["seed"] = seed
    if "progress" in params:
        live["progress"] = {
            "disable": None if progress is None else not progress,
            "desc": describe(cls, n_points, live.get("is_done")),
        }
    return nodes.build(conf, **live)
