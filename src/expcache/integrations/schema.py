"""Structured-config schemas of the valuation task and its groups (data, model, scorer,
method, parallel).

Each option's YAML starts with ``defaults: [/expcache_<group>_<option>_schema@_here_, _self_]``
(the naming of ``expcache.config.schema``), so Hydra rejects unknown keys and wrong types on
the command line and in YAML. Ranges and names are checked in ``__post_init__`` (reached via
``OmegaConf.to_object`` by the task before any work) or by the builders. Dataclasses only: no
pyDVL or scikit-learn import here.

Fields that hold another ``_target_`` node with class-specific arguments (a stopping
criterion, a truncation policy, the utility) are ``Any``/dicts: their keys depend on the class
the user picks, so only the builders can check them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore

from ..errors import ConfigError

__all__ = [
    "DATA_SCHEMAS",
    "METHOD_SCHEMAS",
    "MODEL_SCHEMAS",
    "PARALLEL_SCHEMAS",
    "SCORER_SCHEMAS",
    "TASK_SCHEMAS",
    "check_ranges",
    "register",
    "schema_name",
]

_BUILDERS = "expcache.integrations.builders"
_JOBLIB_BACKENDS = ("loky", "threading", "multiprocessing", "sequential")


def _fraction_or_count(value: float | None, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value <= 0 or (value >= 1 and value != int(value)):
        raise ConfigError(f"{where}={value!r}: a fraction in (0, 1) or a whole count >= 1")


def _positive(value: int | None, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < 1:
        raise ConfigError(f"{where}={value!r}: must be an integer >= 1")


# ----------------------------------------------------------------------------- data
@dataclass
class _SplitConf:
    # A fraction in (0, 1) or a number of points; test_size null = all the others.
    train_size: float = 0.8
    test_size: float | None = None
    # Seeds the split, the subsampling and the label flips (not the valuation).
    split_seed: int = 0
    stratify: bool = True
    # Standardise features with statistics of the training split.
    standardize: bool = True
    # Fraction of training labels flipped on purpose: a good method values them lowest.
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        _fraction_or_count(self.train_size, "data.train_size")
        _fraction_or_count(self.test_size, "data.test_size", optional=True)
        if not 0.0 <= self.label_noise < 1.0:
            raise ConfigError(f"data.label_noise={self.label_noise!r}: a fraction in [0, 1)")


@dataclass
class SklearnDataConf(_SplitConf):
    _target_: str = f"{_BUILDERS}.sklearn_dataset"
    # One of scikit-learn's bundled datasets: iris, wine, breast_cancer, digits.
    name: str = "iris"
    # Subsample this many points (before splitting); null = all.
    max_points: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.name not in ("iris", "wine", "breast_cancer", "digits"):
            raise ConfigError(
                f"data.name={self.name!r}: use one of iris, wine, breast_cancer, digits"
            )
        _positive(self.max_points, "data.max_points", optional=True)


@dataclass
class SyntheticDataConf(_SplitConf):
    _target_: str = f"{_BUILDERS}.synthetic_dataset"
    n_samples: int = 200
    n_features: int = 10
    n_informative: int = 5
    n_redundant: int = 2
    n_classes: int = 2
    class_sep: float = 1.0
    # make_classification's own label noise (part of the data, unlike label_noise).
    flip_y: float = 0.0
    # Seed of make_classification: another seed is another dataset.
    seed: int = 0
    train_size: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_samples", "n_features", "n_informative"):
            _positive(getattr(self, name), f"data.{name}")
        if self.n_classes < 2:
            raise ConfigError(f"data.n_classes={self.n_classes!r}: must be >= 2")


# ----------------------------------------------------------------------------- model
@dataclass
class LogisticRegressionConf:
    _target_: str = "sklearn.linear_model.LogisticRegression"
    C: float = 1.0
    max_iter: int = 1000
    solver: str = "lbfgs"
    random_state: int | None = 0


@dataclass
class KNNConf:
    _target_: str = "sklearn.neighbors.KNeighborsClassifier"
    n_neighbors: int = 5
    weights: str = "uniform"

    def __post_init__(self) -> None:
        _positive(self.n_neighbors, "model.n_neighbors")


@dataclass
class DecisionTreeConf:
    _target_: str = "sklearn.tree.DecisionTreeClassifier"
    max_depth: int | None = None
    min_samples_leaf: int = 1
    # Fixed: with null, ties between equally good splits are broken at random.
    random_state: int | None = 0


@dataclass
class SGDConf:
    _target_: str = "sklearn.linear_model.SGDClassifier"
    loss: str = "log_loss"
    alpha: float = 1e-4
    max_iter: int = 1000
    tol: float | None = 1e-3
    # null on purpose: every fit shuffles differently, so the utility is stochastic.
    random_state: int | None = None


# ----------------------------------------------------------------------------- scorer
@dataclass
class ScorerConf:
    _target_: str = f"{_BUILDERS}.supervised_scorer"
    # A scikit-learn scorer name (sklearn.metrics.get_scorer_names()).
    scoring: str = "accuracy"
    # Score of a model that cannot be fitted (e.g. a subset with a single class).
    default: float = 0.0
    range: list[float] = field(default_factory=lambda: [0.0, 1.0])

    def __post_init__(self) -> None:
        if len(self.range) != 2 or not self.range[0] < self.range[1]:
            raise ConfigError(f"scorer.range={self.range!r}: expected [low, high], low < high")


# ----------------------------------------------------------------------------- method
@dataclass
class _MethodConf:
    _target_: str = ""
    # null: the run's seed. Same seed, same sampled subsets (and, cached, no new evaluations).
    seed: int | None = None
    # A stopping criterion node (_target_ + its arguments) or a list of them (any stops).
    is_done: Any = None
    skip_converged: bool = False
    show_warnings: bool = False

    def __post_init__(self) -> None:
        if self.is_done is None:
            raise ConfigError(
                "method.is_done is missing: e.g. {_target_: "
                "pydvl.valuation.stopping.MaxUpdates, n_updates: 50}"
            )


@dataclass
class TMCShapleyConf(_MethodConf):
    _target_: str = "pydvl.valuation.methods.shapley.TMCShapleyValuation"
    # A truncation policy node; null: pyDVL's default (RelativeTruncation(rtol=0.01)).
    truncation: Any = None


@dataclass
class MSRBanzhafConf(_MethodConf):
    _target_: str = "pydvl.valuation.methods.banzhaf.MSRBanzhafValuation"
    # Subsets per joblib task: larger batches amortise the pickling of the utility.
    batch_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.batch_size, "method.batch_size")


@dataclass
class LOOConf:
    _target_: str = "pydvl.valuation.methods.loo.LOOValuation"


# ----------------------------------------------------------------------------- parallel
@dataclass
class ParallelConf:
    # joblib workers evaluating the utility (-1: all cores). They share the cache.
    n_jobs: int = 1
    backend: str = "loky"
    # BLAS/OpenMP threads per process (threadpoolctl); null: the libraries' defaults. Many
    # tiny fits run fastest single-threaded (4x faster measured on 2 busy cores).
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ConfigError(f"parallel.n_jobs={self.n_jobs!r}: use >= 1, or -1 for all cores")
        if self.backend not in _JOBLIB_BACKENDS:
            raise ConfigError(
                f"parallel.backend={self.backend!r}: use one of {', '.join(_JOBLIB_BACKENDS)}"
            )
        _positive(self.blas_threads, "parallel.blas_threads", optional=True)


# ----------------------------------------------------------------------------- task
@dataclass
class ValuationTaskConf:
    _target_: str = "expcache.integrations.task.valuation_task"
    data: Any = "${data}"
    model: Any = "${model}"
    scorer: Any = "${scorer}"
    method: Any = "${method}"
    parallel: Any = "${parallel}"
    # Builds the utility; point _target_ at your own callable returning a pyDVL UtilityBase:
    # it gets the other keys, plus model=, scorer= and data= if it names them.
    utility: dict[str, Any] = field(
        default_factory=lambda: {
            "_target_": f"{_BUILDERS}.model_utility",
            "catch_errors": True,
            "show_warnings": False,
        }
    )
    # Name of the memoized utility in cache_stats.json.
    name: str = "pydvl_utility"
    # Points listed at each end of the summary table.
    top_k: int = 5
    plot: bool = True
    # Progress bar: null = only on a terminal.
    progress: bool | None = None
    # How workers report their cache counters: auto | file | backend (see ledger.py).
    stats_channel: str = "auto"

    def __post_init__(self) -> None:
        _positive(self.top_k, "task.top_k")
        if self.stats_channel not in ("auto", "file", "backend"):
            raise ConfigError(
                f"task.stats_channel={self.stats_channel!r}: use auto, file or backend"
            )


DATA_SCHEMAS: dict[str, type] = {
    "iris": SklearnDataConf,
    "wine": SklearnDataConf,
    "breast_cancer": SklearnDataConf,
    "synthetic": SyntheticDataConf,
}
MODEL_SCHEMAS: dict[str, type] = {
    "logistic_regression": LogisticRegressionConf,
    "knn": KNNConf,
    "decision_tree": DecisionTreeConf,
    "sgd": SGDConf,
}
SCORER_SCHEMAS: dict[str, type] = {
    "accuracy": ScorerConf,
    "balanced_accuracy": ScorerConf,
    "f1_macro": ScorerConf,
}
METHOD_SCHEMAS: dict[str, type] = {
    "loo": LOOConf,
    "tmc_shapley": TMCShapleyConf,
    "msr_banzhaf": MSRBanzhafConf,
}
PARALLEL_SCHEMAS: dict[str, type] = {"default": ParallelConf}
TASK_SCHEMAS: dict[str, type] = {"valuation": ValuationTaskConf}

_ALL = {
    "data": DATA_SCHEMAS,
    "model": MODEL_SCHEMAS,
    "scorer": SCORER_SCHEMAS,
    "method": METHOD_SCHEMAS,
    "parallel": PARALLEL_SCHEMAS,
    "task": TASK_SCHEMAS,
}


def check_ranges(group: str, node: Mapping[str, Any]) -> None:
    """Run the ``__post_init__`` checks of the schema whose ``_target_`` ``node`` names.

    The task receives plain nodes (the runner resolves and instantiates without converting
    them to dataclasses), so it calls this before any work. Nodes of a user's own
    ``_target_`` have no schema here and pass; keys added with ``+key=`` are left out.
    """
    target = node.get("_target_")
    candidates = [c for c in _ALL.get(group, {}).values() if _default_target(c) == target]
    if group == "parallel":
        candidates = [ParallelConf]
    if not candidates:
        return
    cls = candidates[0]
    names = {f.name for f in fields(cls)}
    cls(**{k: v for k, v in node.items() if k in names})


def _default_target(cls: type) -> Any:
    for f in fields(cls):
        if f.name == "_target_":
            return f.default
    return None


def schema_name(group: str, option: str) -> str:
    """The ConfigStore name an option's YAML extends: ``/<this>@_here_``."""
    return f"expcache_{group}_{option}_schema"


def register(cs: ConfigStore | None = None) -> None:
    """Store every schema of the valuation task (idempotent: a re-store replaces the node)."""
    cs = cs if cs is not None else ConfigStore.instance()
    for group, schemas in _ALL.items():
        for option, node in schemas.items():
            cs.store(name=schema_name(group, option), node=node)
