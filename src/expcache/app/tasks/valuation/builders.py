"""What the valuation task builds from its groups: data, scorer, utility, model, parallel.

Each builder's constructor signature is its group's schema and its constructor checks every
argument (``expcache._validate``) without loading or fitting anything, so the plan can
dry-build the groups before any work: loading happens in ``load()``/``build()``, called by the
task. scikit-learn and pyDVL are imported inside the methods; importing this module (for the
schemas, for ``--help``) costs nothing.

Models are not ours: a model node names a scikit-learn estimator and is checked against its
signature (``nodes.check``) and by scikit-learn's own parameter constraints, one parameter at
a time so that the error names the key (``model.C``). Methods are in ``methods``.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .... import _validate
from ....errors import ConfigError

if TYPE_CHECKING:
    from pydvl.valuation.dataset import Dataset
    from pydvl.valuation.scorers import SupervisedScorer
    from pydvl.valuation.utility import ModelUtility

__all__ = [
    "JOBLIB_BACKENDS",
    "SKLEARN_DATASETS",
    "JoblibParallel",
    "SklearnData",
    "SupervisedScoring",
    "SyntheticData",
    "ValuationData",
    "as_valuation_data",
    "check_estimator",
    "model_utility",
]

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits")
JOBLIB_BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "ray")
# ``address`` of parallel.backend=ray: null or "local" (start Ray here; null: $RAY_ADDRESS if
# set), "auto" (the Ray ``ray start`` runs on this machine), "host:port" or "ray://host:port".
RAY_ADDRESS = r"local|auto|(ray://)?([^\s:/\[\]]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}"


@dataclass
class ValuationData:
    """A train/test split plus what the report needs to know about it.

    ``noisy`` lists the training positions whose labels were flipped on purpose
    (``label_noise``): a good valuation method ranks them last.
    """

    train: Dataset
    test: Dataset
    name: str = "data"
    noisy: np.ndarray[Any, Any] | None = None


def _size(param: str, value: Any, *, allow_none: bool = False) -> int | float | None:
    """A fraction in (0, 1) or a whole number of points."""
    expected = "a fraction in (0, 1) or a whole number of points >= 1"
    if value is None and allow_none:
        return None
    x = _validate.number(param, value, gt=0)
    if x < 1:
        return float(x)
    if x != int(x):
        raise ConfigError(param=param, value=value, expected=expected)
    return int(x)


# ----------------------------------------------------------------------------- data
class DataSplit:
    """How a dataset is split, subsampled, scaled and (on purpose) mislabelled: the options
    every data option shares. Everything is seeded by ``split_seed``."""

    def __init__(
        self,
        *,
        train_size: float = 0.8,
        test_size: float | None = None,
        split_seed: int = 0,
        stratify: bool = True,
        standardize: bool = True,
        label_noise: float = 0.0,
    ) -> None:
        self.train_size = _size("train_size", train_size)
        self.test_size = _size("test_size", test_size, allow_none=True)
        self.split_seed = _validate.integer("split_seed", split_seed, ge=0)
        self.stratify = _validate.boolean("stratify", stratify)
        self.standardize = _validate.boolean("standardize", standardize)
        self.label_noise = _validate.number("label_noise", label_noise, ge=0, le=1)
        if self.label_noise >= 1:
            raise ConfigError(param="label_noise", value=label_noise, expected="a number in [0, 1)")

    def _split(
        self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], name: str, rows: Any = None
    ) -> ValuationData:
        from pydvl.valuation.dataset import Dataset
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(self.split_seed)
        rows = np.arange(len(x)) if rows is None else rows
        try:
            tr, te = train_test_split(
                rows,
                train_size=self.train_size,
                test_size=self.test_size,
                random_state=self.split_seed,
                stratify=y[rows] if self.stratify else None,
            )
        except ValueError as exc:
            raise ConfigError(f"data: cannot split {len(rows)} points of {name!r}: {exc}") from exc
        x_train, x_test = x[tr].astype(np.float64), x[te].astype(np.float64)
        if self.standardize:  # fitted on the training points only: the test set stays unseen
            scaler = StandardScaler().fit(x_train)
            x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
        y_train, y_test = y[tr].copy(), y[te]
        noisy = None
        if self.label_noise > 0:
            classes = np.unique(y)
            count = round(self.label_noise * len(tr))
            noisy = np.sort(rng.choice(len(tr), size=count, replace=False))
            for i in noisy:
                others = classes[classes != y_train[i]]
                y_train[i] = others[rng.integers(len(others))]
        # Points are named by their row in the original dataset (the report shows these).
        train = Dataset(x_train, y_train, data_names=[str(r) for r in tr], description=name)
        test = Dataset(x_test, y_test, data_names=[str(r) for r in te], description=name)
        return ValuationData(train, test, name=name, noisy=noisy)


class SklearnData(DataSplit):
    """One of scikit-learn's bundled classification datasets (``max_points`` subsamples
    before splitting)."""

    def __init__(self, name: str, *, max_points: int | None = None, **split: Any) -> None:
        super().__init__(**split)
        self.name = _validate.choice("name", name, SKLEARN_DATASETS)
        self.max_points = _validate.integer("max_points", max_points, ge=4, allow_none=True)

    def load(self) -> ValuationData:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, f"load_{self.name}")(return_X_y=True)
        rows = None
        if self.max_points is not None and self.max_points < len(x):
            rng = np.random.default_rng(self.split_seed)
            rows = np.sort(rng.choice(len(x), size=self.max_points, replace=False))
        return self._split(x, y, self.name, rows)


class SyntheticData(DataSplit):
    """``make_classification`` with the given size and ``seed`` (another seed is another
    dataset; ``flip_y`` is its own label noise, part of the data), split like the others."""

    def __init__(
        self,
        *,
        n_samples: int = 200,
        n_features: int = 10,
        n_informative: int = 5,
        n_redundant: int = 2,
        n_classes: int = 2,
        class_sep: float = 1.0,
        flip_y: float = 0.0,
        seed: int = 0,
        train_size: float = 0.75,
        **split: Any,
    ) -> None:
        super().__init__(train_size=train_size, **split)
        self.n_samples = _validate.integer("n_samples", n_samples, ge=4)
        self.n_features = _validate.integer("n_features", n_features, ge=1)
        self.n_informative = _validate.integer("n_informative", n_informative, ge=1)
        self.n_redundant = _validate.integer("n_redundant", n_redundant, ge=0)
        self.n_classes = _validate.integer("n_classes", n_classes, ge=2)
        self.class_sep = _validate.number("class_sep", class_sep, gt=0)
        self.flip_y = _validate.number("flip_y", flip_y, ge=0, le=1)
        self.seed = _validate.integer("seed", seed, ge=0)

    def load(self) -> ValuationData:
        from sklearn.datasets import make_classification

        try:
            x, y = make_classification(
                n_samples=self.n_samples,
                n_features=self.n_features,
                n_informative=self.n_informative,
                n_redundant=self.n_redundant,
                n_classes=self.n_classes,
                class_sep=self.class_sep,
                flip_y=self.flip_y,
                random_state=self.seed,
            )
        except ValueError as exc:
            raise ConfigError(f"data (synthetic): {exc}") from exc
        name = f"synthetic(n={self.n_samples},d={self.n_features},seed={self.seed})"
        return self._split(x, y, name)


def as_valuation_data(obj: Any) -> ValuationData:
    """What a ``data._target_`` built: a loader (``load()``), our record or a (train, test)
    pair of pyDVL Datasets."""
    from pydvl.valuation.dataset import Dataset

    load = getattr(obj, "load", None)
    if callable(load):
        obj = load()
    if isinstance(obj, ValuationData):
        return obj
    if isinstance(obj, Sequence) and len(obj) == 2 and all(isinstance(d, Dataset) for d in obj):
        return ValuationData(obj[0], obj[1], name=str(obj[0]))
    raise ConfigError(
        param="_target_",
        expected="a data builder returning a (train, test) pair of pyDVL Datasets, a "
        f"ValuationData or an object with load() (it returned a {type(obj).__name__})",
    )


# ----------------------------------------------------------------------------- scorer
class SupervisedScoring:
    """pyDVL's ``SupervisedScorer`` on the test split, by scikit-learn scoring name;
    ``default`` is the score of a model that cannot be fitted (a one-class subset)."""

    def __init__(
        self,
        scoring: str,
        *,
        default: float = 0.0,
        range: Sequence[float] = (-math.inf, math.inf),
    ) -> None:
        from sklearn.metrics import get_scorer_names

        names = set(get_scorer_names())
        if scoring not in names:
            raise ConfigError(
                param="scoring",
                value=scoring,
                expected="a scikit-learn scorer name",
                hint="e.g. accuracy, balanced_accuracy, f1_macro (sklearn.metrics."
                "get_scorer_names())",
            )
        self.scoring = scoring
        self.default = _validate.number("default", default)
        bounds: list[Any] = list(range) if isinstance(range, (list, tuple)) else []
        expected = "[low, high]: two numbers with low < high"
        if len(bounds) != 2:
            raise ConfigError(param="range", value=range, expected=expected)
        low = _validate.number("range", bounds[0], allow_inf=True)
        high = _validate.number("range", bounds[1], allow_inf=True)
        if not low < high:
            raise ConfigError(param="range", value=list(range), expected=expected)
        self.range = (low, high)

    def build(self, test_data: Dataset) -> SupervisedScorer[Any]:
        from pydvl.valuation.scorers import SupervisedScorer

        return SupervisedScorer(self.scoring, test_data, self.default, self.range)


# ----------------------------------------------------------------------------- utility
def model_utility(
    model: Any,
    scorer: Any,
    *,
    catch_errors: bool = True,
    show_warnings: bool = False,
    clone_before_fit: bool = True,
) -> ModelUtility[Any, Any]:
    """pyDVL's ``ModelUtility`` (fit ``model`` on a subset, score it), without pyDVL's cache."""
    from pydvl.valuation.utility import ModelUtility

    return ModelUtility(
        model,
        scorer,
        catch_errors=catch_errors,
        show_warnings=show_warnings,
        clone_before_fit=clone_before_fit,
    )


# ----------------------------------------------------------------------------- model
def check_estimator(estimator: Any, params: Mapping[str, Any]) -> None:
    """scikit-learn's own parameter constraints, one parameter at a time (so the error is
    about that parameter), on estimators that declare them; nothing is fitted."""
    if not callable(getattr(estimator, "_validate_params", None)):
        return
    cls = type(estimator)
    for key, value in params.items():
        if key.startswith("_"):
            continue
        try:
            cls(**{key: value})._validate_params()
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise ConfigError(
                text[0] if text else type(exc).__name__, param=key, value=value
            ) from None


# ----------------------------------------------------------------------------- parallel
class JoblibParallel:
    """joblib settings of the valuation: ``n_jobs`` workers (-1: all cores) sharing the
    cache, and ``blas_threads`` BLAS/OpenMP threads per process (null: the libraries'
    defaults; many tiny fits run fastest single-threaded). ``backend=ray`` runs the workers
    as Ray tasks (``ray_parallel``) on the Ray at ``address``."""

    def __init__(
        self,
        *,
        n_jobs: int = 1,
        backend: str = "loky",
        blas_threads: int | None = 1,
        address: str | None = None,
    ) -> None:
        self.n_jobs = _validate.integer("n_jobs", n_jobs, ge=-1)
        if self.n_jobs == 0:
            raise ConfigError(param="n_jobs", value=n_jobs, expected="an integer >= 1, or -1")
        self.backend = _validate.choice("backend", backend, JOBLIB_BACKENDS)
        self.blas_threads = _validate.integer("blas_threads", blas_threads, ge=1, allow_none=True)
        self.address = _validate.text(
            "address",
            address,
            pattern=RAY_ADDRESS,
            describe="local, auto, host:port or ray://host:port",
            allow_none=True,
        )
        if self.address is not None and self.backend != "ray":
            raise ConfigError(
                param="address",
                value=address,
                expected="null unless backend=ray (the address of a Ray cluster)",
                hint="set parallel.backend=ray, or drop the address",
            )

    @contextlib.contextmanager
    def context(self, ctx: Any = None) -> Iterator[None]:
        """joblib's settings for the ``with`` block; ``ctx`` (the run's cache context) lets
        the Ray backend check that the cache reaches every host of the cluster."""
        import joblib

        with contextlib.ExitStack() as stack:
            if self.blas_threads is not None:
                from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

                stack.enter_context(threadpool_limits(limits=self.blas_threads))
            # Workers import pyDVL afresh: keep its deprecation chatter out of the run's
            # output (an explicit PYTHONWARNINGS of the user wins).
            if "PYTHONWARNINGS" not in os.environ:
                os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning"
                stack.callback(os.environ.pop, "PYTHONWARNINGS", None)
            if self.backend == "ray":
                from .ray_parallel import ray_context

                stack.enter_context(ray_context(self.address, self.n_jobs, ctx))
                yield
                return
            kwargs: dict[str, Any] = {"backend": self.backend, "n_jobs": self.n_jobs}
            if self.blas_threads is not None and self.backend == "loky":
                kwargs["inner_max_num_threads"] = self.blas_threads
            stack.enter_context(joblib.parallel_config(**kwargs))
            yield
