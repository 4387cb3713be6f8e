"""The objects the valuation task builds from its config groups (``_target_`` callables).

Each builder takes plain keyword arguments (the YAML, after ``instantiate(..., _convert_="all")``)
so that users can call them from Python too, and validates what Hydra's schemas cannot
(ranges, names). scikit-learn and pyDVL are imported inside the functions: importing this
module (e.g. for ``--help``) stays cheap.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from pydvl.valuation.dataset import Dataset
    from pydvl.valuation.scorers import SupervisedScorer
    from pydvl.valuation.utility import ModelUtility

__all__ = [
    "SKLEARN_DATASETS",
    "ValuationData",
    "as_valuation_data",
    "make_method",
    "model_utility",
    "sklearn_dataset",
    "supervised_scorer",
    "synthetic_dataset",
]

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits")


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


def _count_or_fraction(value: float | None, what: str) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"data.{what}={value!r}: a fraction in (0, 1) or a count >= 1")
    if value >= 1:
        if float(value) != int(value):
            raise ConfigError(f"data.{what}={value!r}: a count must be a whole number")
        return int(value)
    return float(value)


def _split(
    x: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    *,
    name: str,
    train_size: float,
    test_size: float | None,
    split_seed: int,
    max_points: int | None,
    stratify: bool,
    standardize: bool,
    label_noise: float,
) -> ValuationData:
    from pydvl.valuation.dataset import Dataset
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if not 0.0 <= label_noise < 1.0:
        raise ConfigError(f"data.label_noise={label_noise!r}: a fraction in [0, 1)")
    rng = np.random.default_rng(split_seed)
    rows = np.arange(len(x))
    if max_points is not None:
        if max_points < 4:
            raise ConfigError(f"data.max_points={max_points!r}: need at least 4 points")
        if max_points < len(x):
            rows = np.sort(rng.choice(len(x), size=max_points, replace=False))
    train_n = _count_or_fraction(train_size, "train_size")
    test_n = _count_or_fraction(test_size, "test_size")
    try:
        tr, te = train_test_split(
            rows,
            train_size=train_n,
            test_size=test_n,
            random_state=split_seed,
            stratify=y[rows] if stratify else None,
        )
    except ValueError as exc:
        raise ConfigError(f"data: cannot split {len(rows)} points of {name!r}: {exc}") from exc
    x_train, x_test = x[tr].astype(np.float64), x[te].astype(np.float64)
    if standardize:  # fitted on the training points only: the test set stays unseen
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    y_train, y_test = y[tr].copy(), y[te]
    noisy = None
    if label_noise > 0:
        classes = np.unique(y)
        noisy = np.sort(rng.choice(len(tr), size=round(label_noise * len(tr)), replace=False))
        for i in noisy:
            others = classes[classes != y_train[i]]
            y_train[i] = others[rng.integers(len(others))]
    # Points are named by their row in the original dataset (the report shows these).
    train = Dataset(x_train, y_train, data_names=[str(r) for r in tr], description=name)
    test = Dataset(x_test, y_test, data_names=[str(r) for r in te], description=name)
    return ValuationData(train, test, name=name, noisy=noisy)


def sklearn_dataset(
    name: str,
    *,
    train_size: float = 0.8,
    test_size: float | None = None,
    split_seed: int = 0,
    max_points: int | None = None,
    stratify: bool = True,
    standardize: bool = True,
    label_noise: float = 0.0,
) -> ValuationData:
    """One of scikit-learn's bundled classification datasets, split into train and test.

    ``train_size``/``test_size``: a fraction in (0, 1) or a number of points (``test_size``
    null = the rest). ``max_points`` subsamples before splitting; ``label_noise`` flips that
    fraction of the training labels; everything is seeded by ``split_seed``.
    """
    import sklearn.datasets

    if name not in SKLEARN_DATASETS:
        raise ConfigError(f"data.name={name!r}: use one of {', '.join(SKLEARN_DATASETS)}")
    x, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    return _split(
        x,
        y,
        name=name,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
        max_points=max_points,
        stratify=stratify,
        standardize=standardize,
        label_noise=label_noise,
    )


def synthetic_dataset(
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
    test_size: float | None = None,
    split_seed: int = 0,
    stratify: bool = True,
    standardize: bool = True,
    label_noise: float = 0.0,
) -> ValuationData:
    """``make_classification`` with the given size and ``seed``, then split like the others."""
    from sklearn.datasets import make_classification

    try:
        x, y = make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=n_informative,
            n_redundant=n_redundant,
            n_classes=n_classes,
            class_sep=class_sep,
            flip_y=flip_y,
            random_state=seed,
        )
    except ValueError as exc:
        raise ConfigError(f"data (synthetic): {exc}") from exc
    return _split(
        x,
        y,
        name=f"synthetic(n={n_samples},d={n_features},seed={seed})",
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
        max_points=None,
        stratify=stratify,
        standardize=standardize,
        label_noise=label_noise,
    )


def as_valuation_data(obj: Any) -> ValuationData:
    """Accept what a user's ``data._target_`` may return: our record or a (train, test) pair."""
    from pydvl.valuation.dataset import Dataset

    if isinstance(obj, ValuationData):
        return obj
    if isinstance(obj, Sequence) and len(obj) == 2 and all(isinstance(d, Dataset) for d in obj):
        return ValuationData(obj[0], obj[1], name=str(obj[0]))
    raise ConfigError(
        f"data._target_ returned {type(obj).__name__}: expected a (train, test) pair of pyDVL "
        f"Datasets or an expcache.integrations.builders.ValuationData"
    )


def supervised_scorer(
    scoring: str,
    *,
    test_data: Dataset,
    default: float = 0.0,
    range: Sequence[float] = (-np.inf, np.inf),
) -> SupervisedScorer:
    """pyDVL's ``SupervisedScorer`` on the test split, with a scikit-learn scoring name."""
    from pydvl.valuation.scorers import SupervisedScorer
    from sklearn.metrics import get_scorer_names

    if scoring not in get_scorer_names():
        raise ConfigError(
            f"scorer.scoring={scoring!r}: not a scikit-learn scorer name "
            f"(e.g. accuracy, balanced_accuracy, f1_macro)"
        )
    if len(range) != 2 or not range[0] < range[1]:
        raise ConfigError(f"scorer.range={list(range)!r}: expected [low, high] with low < high")
    return SupervisedScorer(scoring, test_data, float(default), (float(range[0]), float(range[1])))


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


def _stopping(node: Any) -> Any:
    """One criterion, or a list of them combined with ``|`` (stop when any says so)."""
    from hydra.utils import instantiate

    if isinstance(node, Mapping):
        return instantiate(node, _convert_="all")
    if isinstance(node, Sequence) and not isinstance(node, str) and node:
        return functools.reduce(operator.or_, (_stopping(n) for n in node))
    raise ConfigError(
        f"method.is_done={node!r}: expected a stopping criterion node with _target_ "
        f"(e.g. pydvl.valuation.stopping.MaxUpdates) or a list of them"
    )


def make_method(node: Mapping[str, Any], utility: Any, *, seed: int, progress: bool | None) -> Any:
    """Instantiate a pyDVL valuation method on ``utility``.

    ``seed: null`` in the method takes the run's ``seed``; ``progress`` None shows pyDVL's
    bar only on a terminal.
    """
    from hydra.utils import get_method, instantiate
    from omegaconf import OmegaConf

    conf: dict[str, Any] = (
        OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
        if OmegaConf.is_config(node)
        else dict(node)
    )
    target = conf.get("_target_")
    if not isinstance(target, str):
        raise ConfigError("method._target_ is missing: name a pyDVL valuation class")
    try:
        accepts = inspect.signature(get_method(target)).parameters
    except Exception as exc:
        raise ConfigError(f"method._target_={target!r}: cannot be imported ({exc})") from exc
    extra: dict[str, Any] = {"utility": utility}
    if "is_done" in conf:
        extra["is_done"] = _stopping(conf.pop("is_done"))
    if "seed" in accepts and conf.get("seed") is None:
        conf["seed"] = seed
    if "progress" in accepts:
        extra["progress"] = {"disable": None} if progress is None else bool(progress)
    # Build a partial, then pass the live objects: never route them through OmegaConf.
    factory = instantiate(conf, _partial_=True, _convert_="all")
    return factory(**extra)
