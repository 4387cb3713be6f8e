"""The valuation task's checks: what can be checked before any evaluation, and what the
counters say after the valuation.

Before: one uncached evaluation on the whole training set (``task.check_model``) -- a model
that cannot be fitted at all (``model.penalty=l1`` with the lbfgs solver: each value passes
scikit-learn's constraints alone) fails at once, and the parameter responsible is found by
resetting the model node's parameters one at a time to their defaults, never by reading the
error message. After: the run fails when every utility call failed or more than
``max_failed_fraction`` of them did (failed fits get the default score and are never cached:
see ``expcache.integrations.pydvl``). And the syntax of ``task.objective``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .... import _validate
from ....errors import ConfigError, ExpcacheError
from ....stats import CacheStats
from . import builders

__all__ = [
    "RESULT_KEYS",
    "EvaluationsFailed",
    "check_failures",
    "check_fit",
    "check_objective",
    "fit_error",
]

# The top-level keys of the task's result (what ``objective`` can point into).
RESULT_KEYS = (
    "task",
    "method",
    "data",
    "model",
    "scorer",
    "seed",
    "n_points",
    "n_test",
    "n_jobs",
    "seconds",
    "values",
    "cache",
    "files",
)
_OBJECTIVE = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


class EvaluationsFailed(ExpcacheError):
    """Too many utility evaluations failed for the values to mean anything."""


def check_objective(value: Any, keys: tuple[str, ...] | None = None) -> str | None:
    """``objective``: a dotted path into the task's result (``values.top.0.value``), or null."""
    if value is None:
        return None
    text = _validate.text(
        "objective",
        value,
        pattern=_OBJECTIVE.pattern,
        describe="a dotted path into the result, e.g. values.mean or values.top.0.value",
    )
    head = text.split(".", 1)[0]
    if keys is not None and head not in keys:
        raise ConfigError(
            param="objective",
            value=value,
            expected=f"a dotted path starting with one of: {', '.join(keys)}",
        )
    return str(text)


def check_fit(utility: Any, data: builders.ValuationData, model_node: Any) -> None:
    """One uncached evaluation on the whole training set, errors raised: a model that
    cannot be fitted at all fails now, before any evaluation, naming its parameter."""
    from pydvl.valuation.types import Sample

    from ....integrations.pydvl import raising_copy

    if getattr(utility, "training_data", None) is None and callable(
        getattr(utility, "with_dataset", None)
    ):
        utility = utility.with_dataset(data.train, copy=True)
    probe = raising_copy(utility)
    sample = Sample(None, np.arange(len(data.train)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe(sample)
    except Exception as exc:
        raise fit_error(probe, sample, exc, data, model_node) from None

def fit_error(
    probe: Any, sample: Any, exc: Exception, data: builders.ValuationData, model_node: Any
) -> ConfigError:
    """A ``ConfigError`` naming the model parameter whose default makes the fit work (each
    parameter of the model node reset in turn), else the model node itself."""
    model = getattr(probe, "model", None)
    what = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    where = f"{len(data.train)} training points of {data.name}"
    node = model_node if isinstance(model_node, Mapping) else {}
    keys = [k for k in node if not str(k).startswith("_")]
    defaults: dict[str, Any] = {}
    with contextlib.suppress(TypeError, ValueError):
        for name, param in inspect.signature(type(model)).parameters.items():
            if param.default is not inspect.Parameter.empty:
                defaults[name] = param.default
    set_params = getattr(model, "set_params", None)
    for key in keys if callable(set_params) else ():
        if key not in defaults or defaults[key] == node[key]:
            continue
        trial = copy.copy(probe)
        try:
            trial.model = _clone(model).set_params(**{key: defaults[key]})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial(sample)
        except Exception:
            continue
        return ConfigError(
            param=f"model.{key}",
            value=node[key],
            expected=f"a value with which {type(model).__name__} can be fitted on the "
            f"{where} (it can with the default, {key}={defaults[key]!r})",
            hint=f"fitting on the whole training set failed: {what}",
        )
    return ConfigError(
        param="model",
        value=type(model).__name__ if model is not None else None,
        expected=f"a model that can be fitted and scored on the {where}",
        hint=f"fitting on the whole training set failed: {what} (set task.check_model="
        "false to skip this check)",
    )

def check_failures(
    stats: CacheStats, first_error: str | None, max_failed_fraction: float
) -> None:
    """``EvaluationsFailed`` when every call failed, or more than the fraction did."""
    calls, failed = stats.calls, stats.failed
    if not failed:
        return
    cause = f"; the first error: {first_error.rstrip('. ')}" if first_error else ""
    if failed >= calls:
        raise EvaluationsFailed(
            f"every one of the {calls} utility evaluations failed, so every value would "
            f"be the scorer's default score{cause}. Nothing failed was cached."
        )
    if failed > max_failed_fraction * calls:
        raise EvaluationsFailed(
            f"{failed} of {calls} utility calls ({100.0 * failed / calls:.1f}%) failed, "
            f"more than task.max_failed_fraction={max_failed_fraction}{cause}. "
            "Nothing failed was cached; raise task.max_failed_fraction to accept this."
        )


def _clone(model: Any) -> Any:
    from sklearn.base import clone

    return clone(model)
