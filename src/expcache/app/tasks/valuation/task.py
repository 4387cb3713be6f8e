"""The ``valuation`` task: value a dataset's points with pyDVL, on a cached utility.

``ValuationTask``'s constructor is the plan-time half: it takes the ``data``, ``model``,
``scorer``, ``method`` and ``parallel`` nodes (the root groups, through the task's
interpolations) as plain mappings and checks every one of them before any work -- our
builders are dry-built (their constructors check their arguments and load nothing), the
model is built and its parameters go through scikit-learn's own constraints, the method and
its stopping criteria and truncation policy are bound to pyDVL's signatures. Calling the task
is the work: load, build, wrap the utility in the run's cache, fit, report.

The errors it raises are about its own parameters (``model.C`` is the task's ``model`` node);
the plan maps them to where the user sets them (the root ``model.C``).

Failed evaluations (a fit or score raising) are never cached (see
``expcache.integrations.pydvl``): they get the scorer's default score, as pyDVL gives them,
are counted in ``failed``, and the run fails when all of them or more than
``max_failed_fraction`` of the utility calls failed -- values built mostly from default
scores mean nothing. What can be checked before any evaluation is checked at setup: one
uncached evaluation on the whole training set (``check_model``), and when it fails the model
parameter responsible is found by resetting the node's parameters one at a time.

Everything heavy (pyDVL ~1.3 s, scikit-learn, matplotlib) is imported when the task is
checked or run, not when the schemas are registered.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from .... import _validate
from ....errors import ConfigError
from ....ledger import Channel, check_channel
from ....memoize import Memoized
from ....stats import CacheStats
from ... import nodes
from . import builders, checks, methods
from .checks import RESULT_KEYS, EvaluationsFailed, check_objective

__all__ = [
    "DEFAULT_UTILITY",
    "RESULT_KEYS",
    "CacheContextLike",
    "EvaluationsFailed",
    "ValuationTask",
    "check_objective",
]

log = logging.getLogger("expcache")

DEFAULT_UTILITY: Mapping[str, Any] = MappingProxyType(
    {"_target_": f"{builders.__name__}.model_utility"}
)
# What the task offers a utility builder, by parameter name (a user's builder may want the
# data but not the model, or only the scorer).
UTILITY_ARGUMENTS = ("model", "scorer", "data")
class CacheContextLike(Protocol):
    """What the task needs from the run's cache context."""

    backend: Any
    policy: Any

    def wrap(
        self, fn: Callable[..., Any], *, name: str | None = None, **overrides: Any
    ) -> Memoized[..., Any]: ...

    def add_stats(self, name: str, stats: CacheStats) -> None: ...


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pyDVL's import-time deprecations
        yield


def _checked(group: str, node: Any, check: Callable[[Mapping[str, Any]], Any]) -> Any:
    if not nodes.is_node(node):
        raise ConfigError(
            param=group,
            value=node,
            expected="a config node with _target_",
            hint=f"select a {group} option, e.g. `{group}=...`",
        )
    try:
        with _quiet():
            return check(node)
    except ConfigError as exc:
        raise nodes.under(exc, group) from None


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


class ValuationTask:
    """Value the training points of ``data`` with ``method`` on a cached utility.

    ``utility`` builds the utility from the live ``model``, ``scorer`` and ``data`` (those it
    names); ``name`` is the memoized utility's name in ``cache_stats.json``; ``top_k`` points
    are listed at each end of the summary; ``progress`` null shows the bar only on a
    terminal; ``stats_channel`` is how workers report their counters (see ``expcache.ledger``).

    ``max_failed_fraction``: the run fails when more than this fraction of the utility calls
    failed (and always when all did). 0.5 by default: a one-class subset cannot be fitted by
    most classifiers, so permutation methods always see some failures (4% of the default
    job's calls), and small data with many classes more (the first points of every
    permutation), but once half the calls score the default, the values mostly measure the
    default score. ``check_model``: evaluate the utility once on the whole training set
    (uncached) before any work, so a model that cannot be fitted fails at once, naming the
    parameter responsible. ``objective``: a dotted path into the result returned as a float
    to Hydra (for sweepers such as optuna), e.g. ``values.mean`` or ``values.top.0.value``.
    ``verbose``: pyDVL's INFO logs and the worker count in the summary.
    """

    def __init__(
        self,
        *,
        data: Any,
        model: Any,
        scorer: Any,
        method: Any,
        parallel: Any,
        utility: Any = DEFAULT_UTILITY,
        name: str = "pydvl_utility",
        top_k: int = 5,
        plot: bool = True,
        progress: bool | None = None,
        stats_channel: Channel = "auto",
        max_failed_fraction: float = 0.5,
        check_model: bool = True,
        objective: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.name = _validate.text("name", name, pattern=r"\S+", describe="a non-empty name")
        self.top_k = _validate.integer("top_k", top_k, ge=1)
        self.plot = _validate.boolean("plot", plot)
        self.progress = None if progress is None else _validate.boolean("progress", progress)
        self.stats_channel = check_channel(stats_channel)
        self.max_failed_fraction = _validate.number(
            "max_failed_fraction", max_failed_fraction, ge=0, le=1
        )
        self.check_model = _validate.boolean("check_model", check_model)
        self.objective = check_objective(objective, RESULT_KEYS)
        self.verbose = _validate.boolean("verbose", verbose)
        self.groups = {
            "data": dict(data) if isinstance(data, Mapping) else data,
            "model": dict(model) if isinstance(model, Mapping) else model,
            "scorer": dict(scorer) if isinstance(scorer, Mapping) else scorer,
            "method": dict(method) if isinstance(method, Mapping) else method,
            "utility": dict(utility) if isinstance(utility, Mapping) else utility,
        }
        _checked("data", self.groups["data"], _dry)
        _checked("model", self.groups["model"], _dry_estimator)
        _checked("scorer", self.groups["scorer"], _dry)
        _checked(
            "utility",
            self.groups["utility"],
            lambda n: nodes.check(n, offered=UTILITY_ARGUMENTS),
        )
        _checked("method", self.groups["method"], methods.check_method)
        self.parallel = _checked("parallel", parallel, _dry)
        if not callable(getattr(self.parallel, "context", None)):
            raise ConfigError(
                param="parallel._target_",
                value=parallel.get("_target_") if isinstance(parallel, Mapping) else parallel,
                expected="a class whose instances have context() (e.g. JoblibParallel)",
            )

    # -- the work ------------------------------------------------------------------------------
    def setup(self) -> tuple[builders.ValuationData, Any, Any, Any]:
        """Load the data and build model, scorer and utility (``snapshot.py`` reuses this)."""
        with _quiet():
            data = builders.as_valuation_data(nodes.build(self.groups["data"]))
            model = nodes.build(self.groups["model"])
            scorer = nodes.build(self.groups["scorer"])
            if callable(getattr(scorer, "build", None)):
                scorer = scorer.build(data.test)
            offer = {"model": model, "scorer": scorer, "data": data}
            try:
                utility = nodes.build(self.groups["utility"], offer=offer)
            except ConfigError as exc:
                raise nodes.under(exc, "utility") from None
        return data, model, scorer, utility

    def __call__(self, *, ctx: CacheContextLike, output_dir: Path, seed: int) -> dict[str, Any]:
        """Writes ``values.csv`` and ``values.png`` into ``output_dir``, hands the counters of
        this process and of every joblib worker to ``ctx.add_stats``, prints a summary and
        returns a JSON-ready dict."""
        started = time.perf_counter()
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        with _quiet():
            from ....integrations.pydvl import cached_utility, forget_run
            from . import report

        data, model, scorer, utility = self.setup()
        model = getattr(utility, "model", model)  # a user's utility may bring its own
        scorer = getattr(utility, "scorer", scorer)
        if self.check_model:
            checks.check_fit(utility, data, self.groups["model"])

        def memoizer(fn: Callable[..., float], signature: bytes) -> Memoized[..., float]:
            return ctx.wrap(fn, name=self.name, signature=signature)

        cached = cached_utility(
            utility, ctx.backend, memoizer=memoizer, stats_channel=self.stats_channel
        )
        try:
            method = methods.make_method(
                self.groups["method"],
                cached,
                seed=seed,
                progress=self.progress,
                n_points=len(data.train),
            )
            algorithm = str(getattr(method, "algorithm_name", type(method).__name__))
            repeated = getattr(getattr(ctx, "policy", None), "repeat", None) is not None
            if _looks_stochastic(model) and not repeated:
                log.warning(
                    "expcache: %s has random_state=None, so the utility is stochastic; a "
                    "deterministic cache policy keeps its first evaluation of each subset "
                    "(use policy=stochastic to average repeated evaluations)",
                    type(model).__name__,
                )
            setup = time.perf_counter() - started
            fit_started = time.perf_counter()
            with self.parallel.context(ctx), _pydvl_logs(self.verbose):
                method.fit(data.train)
            fit_seconds = time.perf_counter() - fit_started
            # pyDVL binds a copy of the utility to the training data (with_dataset): the data
            # part of the fingerprint is only known on that copy.
            bound = getattr(method, "utility", None) or getattr(method, "_utility", None)
            signature = getattr(bound, "signature", None) or cached.signature
            worker_total, workers, complete = cached.ledger.worker_stats()
            if (getattr(ctx, "backend_info", None) or {}).get("unreached_hosts"):
                complete = False  # warned at start: other hosts' workers could not report
            stats = cached.ledger.local_stats() + worker_total
            run_report = cached.report()
        finally:
            cached.ledger.close()
            forget_run(cached.ledger)
        # The context already counts the memoizer it built for this process (ctx.wrap): add
        # only what the workers did, or the parent's share would be counted twice.
        ctx.add_stats(self.name, worker_total)
        add_seconds = getattr(ctx, "add_call_seconds", None)
        if callable(add_seconds):
            add_seconds(self.name, run_report.call_seconds)
        saving = report.Saving.of(stats, run_report.call_seconds)
        checks.check_failures(stats, run_report.first_error, self.max_failed_fraction)

        result = method.result
        labels = data.train.data().y
        table = report.ValueTable.from_result(result, labels, data.noisy, algorithm)
        files = {"values": report.write_csv(table, output_dir / "values.csv").name}
        title = (
            f"{algorithm} on {data.name}: {len(data.train)} train / {len(data.test)} test "
            f"points, {type(model).__name__}, {getattr(scorer, 'name', scorer)}"
        )
        if self.plot:
            files["plot"] = report.write_plot(
                table, output_dir / "values.png", title, cache=_plot_cache(ctx, report)
            ).name
        seconds = {"setup": setup, "fit": fit_seconds, "total": time.perf_counter() - started}
        print(
            report.format_summary(
                table,
                stats,
                title=title,
                top_k=self.top_k,
                seconds=seconds,
                workers=workers,
                saving=saving,
                first_error=run_report.first_error,
                verbose=self.verbose,
            ),
            flush=True,
        )
        calls = stats.calls
        return {
            "task": "valuation",
            "method": algorithm,
            "data": data.name,
            "model": type(model).__name__,
            "scorer": str(getattr(scorer, "name", scorer)),
            "seed": int(seed),
            "n_points": len(data.train),
            "n_test": len(data.test),
            "n_jobs": self.parallel.n_jobs,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "values": table.summary(self.top_k),
            "cache": {
                **stats.as_dict(),
                "hit_rate": stats.hits / calls if calls else 0.0,
                "call_seconds": run_report.call_seconds,
                "time_saved": saving.as_dict(),
                "first_error": run_report.first_error,
                "worker_processes": workers,
                "complete": complete and run_report.complete,
                "signature": signature.hex() if isinstance(signature, bytes) else None,
            },
            "files": files,
        }

def _plot_cache(ctx: CacheContextLike, report: Any) -> Any:
    """The plot's memoizer on the run's cache, or None: a context without ``wrap_private``
    (a hand-made one) gets a drawn plot, and so does one that cannot build the memoizer
    (the plot cache must never fail a run)."""
    private = getattr(ctx, "wrap_private", None)
    if not callable(private):
        return None
    try:
        return report.plot_cache(private)
    except Exception as exc:
        log.warning("expcache: no plot cache (%r); the plot is drawn", exc)
        return None


@contextlib.contextmanager
def _pydvl_logs(verbose: bool) -> Iterator[None]:
    """pyDVL logs progress at INFO ("Computing total utility ..."), which Hydra's logging
    shows: silenced to WARNING unless asked for."""
    logger = logging.getLogger("pydvl")
    previous = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _dry(node: Mapping[str, Any]) -> Any:
    """Check a node, and build it if its target is a class (constructors only check and
    store their arguments); a function is only bound to its signature."""
    fn = nodes.check(node)
    return nodes.build(node) if isinstance(fn, type) else None


def _dry_estimator(node: Mapping[str, Any]) -> Any:
    estimator = _dry(node)
    builders.check_estimator(estimator, node)
    return estimator
