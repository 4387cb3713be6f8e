"""The ``valuation`` task of the Hydra runner: value a dataset's points with pyDVL, cached.

Calling convention (the runner's): ``valuation_task(*, ctx, output_dir, seed, **params)``,
instantiated with ``_recursive_=False`` so ``params`` holds the raw ``data``/``model``/...
nodes; this module builds them itself with ``_convert_="all"`` (scikit-learn rejects
OmegaConf containers). ``ctx`` is the run's cache context: ``ctx.backend``,
``ctx.wrap(fn, name=..., signature=...) -> Memoized`` (applies the configured policy) and
``ctx.add_stats(name, stats)`` (what ends up in ``cache_stats.json``).

Everything heavy (pyDVL ~1.3 s, scikit-learn, matplotlib) is imported inside the function.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError
from ..memoize import Memoized
from ..stats import CacheStats

__all__ = ["CacheContextLike", "valuation_task"]

log = logging.getLogger("expcache")


class CacheContextLike(Protocol):
    """What the task needs from the runner's cache context."""

    backend: Any

    def wrap(
        self, fn: Callable[..., Any], *, name: str | None = None, **overrides: Any
    ) -> Memoized[..., Any]: ...

    def add_stats(self, name: str, stats: CacheStats) -> None: ...


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _offered(fn: Callable[..., Any], objects: dict[str, Any]) -> dict[str, Any]:
    """The live objects ``fn`` asks for by name (all of them if it takes ``**kwargs``): a
    user's ``utility._target_`` may want the data but not the model, or only the scorer."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return objects
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return objects
    return {k: v for k, v in objects.items() if k in params}


def _build(node: Any, where: str, **objects: Any) -> Any:
    """Instantiate ``node``, passing live objects as keyword arguments (not through OmegaConf)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if node is None or not isinstance(_plain(node), Mapping) or "_target_" not in _plain(node):
        raise ConfigError(f"{where}: expected a node with _target_, got {_plain(node)!r}")
    try:
        factory = instantiate(node, _partial_=True, _convert_="all")
        return factory(**_offered(factory.func, objects))
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        raise ConfigError(f"{where}: {exc}") from exc


def _looks_stochastic(model: Any) -> bool:
    """A scikit-learn estimator with ``random_state=None`` that actually uses randomness."""
    get_params = getattr(model, "get_params", None)
    params: dict[str, Any] = get_params() if callable(get_params) else {}
    if "random_state" not in params or params["random_state"] is not None:
        return False
    solver = params.get("solver")
    # lbfgs/newton-cg/newton-cholesky logistic regression ignore random_state entirely.
    return not (
        type(model).__name__ == "LogisticRegression" and solver not in ("sag", "saga", "liblinear")
    )


@contextlib.contextmanager
def _parallel(conf: Mapping[str, Any]) -> Iterator[None]:
    import joblib

    n_jobs = int(conf.get("n_jobs", 1))
    blas = conf.get("blas_threads")
    with contextlib.ExitStack() as stack:
        if blas is not None:
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

            stack.enter_context(threadpool_limits(limits=int(blas)))
        kwargs: dict[str, Any] = {"backend": conf.get("backend", "loky"), "n_jobs": n_jobs}
        if blas is not None and kwargs["backend"] == "loky":
            kwargs["inner_max_num_threads"] = int(blas)
        stack.enter_context(joblib.parallel_config(**kwargs))
        # Workers import pyDVL afresh: keep its deprecation chatter out of the run's output
        # (an explicit PYTHONWARNINGS of the user wins).
        if "PYTHONWARNINGS" not in os.environ:
            os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning"
            stack.callback(os.environ.pop, "PYTHONWARNINGS", None)
        yield


def valuation_task(
    *, ctx: CacheContextLike, output_dir: Path, seed: int, **params: Any
) -> dict[str, Any]:
    """Value the training points of ``data`` with ``method`` on a cached utility.

    Writes ``values.csv`` and ``values.png`` into ``output_dir``, hands the run's cache
    counters (this process and every joblib worker) to ``ctx.add_stats``, prints a summary
    and returns a JSON-ready dict.
    """
    import warnings

    from .schema import check_ranges

    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for key in ("data", "model", "scorer", "method", "parallel"):
        if params.get(key) is None:
            raise ConfigError(f"task.{key} is missing: select a {key} option, e.g. {key}=...")
        node = _plain(params[key])
        if not isinstance(node, Mapping):
            raise ConfigError(f"task.{key}={node!r}: expected a config node")
        check_ranges(key, node)
    unknown = set(params) - {
        "data",
        "model",
        "scorer",
        "method",
        "parallel",
        "utility",
        "name",
        "top_k",
        "plot",
        "progress",
        "stats_channel",
    }
    if unknown:
        raise ConfigError(f"task: unknown parameters {sorted(unknown)}")
    name = str(params.get("name") or "pydvl_utility")
    top_k = int(params.get("top_k", 5))
    progress = params.get("progress")
    utility_node = params.get("utility") or {
        "_target_": "expcache.integrations.builders.model_utility"
    }

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyDVL's import-time deprecations
        from . import builders, report
        from .pydvl import cached_utility

    data = builders.as_valuation_data(_build(params["data"], "data"))
    model = _build(params["model"], "model")
    scorer = _build(params["scorer"], "scorer", test_data=data.test)
    utility = _build(utility_node, "utility", model=model, scorer=scorer, data=data)
    model = getattr(utility, "model", model)  # a user's utility may bring its own
    scorer = getattr(utility, "scorer", scorer)

    def memoizer(fn: Callable[..., float], signature: bytes) -> Memoized[..., float]:
        return ctx.wrap(fn, name=name, signature=signature)

    cached = cached_utility(
        utility, ctx.backend, memoizer=memoizer, stats_channel=params.get("stats_channel", "auto")
    )
    try:
        method = builders.make_method(params["method"], cached, seed=seed, progress=progress)
        algorithm = str(getattr(method, "algorithm_name", type(method).__name__))
        repeated = dict(getattr(ctx, "policy", None) or {}).get("option") == "stochastic"
        if _looks_stochastic(model) and not repeated:
            log.warning(
                "expcache: %s has random_state=None, so the utility is stochastic; a "
                "deterministic cache policy keeps its first evaluation of each subset "
                "(use policy=stochastic to average repeated evaluations)",
                type(model).__name__,
            )
        setup = time.perf_counter() - started
        fit_started = time.perf_counter()
        with _parallel(_plain(params["parallel"])):
            method.fit(data.train)
        fit_seconds = time.perf_counter() - fit_started
        # pyDVL binds a copy of the utility to the training data (with_dataset): the data
        # part of the fingerprint is only known on that copy.
        bound = getattr(method, "utility", None) or getattr(method, "_utility", None)
        signature = getattr(bound, "signature", None) or cached.signature
        worker_total, workers, complete = cached.ledger.worker_stats()
        stats = cached.ledger.local_stats() + worker_total
    finally:
        cached.ledger.close()
    # The context already counts the memoizer it built for this process (ctx.wrap): add only
    # what the workers did, or the parent's share would be counted twice.
    ctx.add_stats(name, worker_total)

    result = method.result
    labels = data.train.data().y
    table = report.ValueTable.from_result(result, labels, data.noisy, algorithm)
    files = {"values": report.write_csv(table, output_dir / "values.csv").name}
    title = (
        f"{algorithm} on {data.name}: {len(data.train)} train / {len(data.test)} test points, "
        f"{type(model).__name__}, {getattr(scorer, 'name', scorer)}"
    )
    if params.get("plot", True):
        files["plot"] = report.write_plot(table, output_dir / "values.png", title).name
    seconds = {"setup": setup, "fit": fit_seconds, "total": time.perf_counter() - started}
    print(
        report.format_summary(
            table, stats, title=title, top_k=top_k, seconds=seconds, workers=workers
        ),
        flush=True,
    )
    parallel = _plain(params["parallel"])
    return {
        "task": "valuation",
        "method": algorithm,
        "data": data.name,
        "model": type(model).__name__,
        "scorer": str(getattr(scorer, "name", scorer)),
        "seed": int(seed),
        "n_points": len(data.train),
        "n_test": len(data.test),
        "n_jobs": int(parallel.get("n_jobs", 1)),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "values": table.summary(top_k),
        "cache": {
            **stats.as_dict(),
            "worker_processes": workers,
            "complete": complete,
            "signature": signature.hex() if isinstance(signature, bytes) else None,
        },
        "files": files,
    }
