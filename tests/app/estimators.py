"""Tiny scikit-learn estimators for the app's end-to-end tests (importable by the console
script in a subprocess with the repository on ``PYTHONPATH``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


def subset_digest(x: np.ndarray[Any, Any]) -> str:
    """The same training subset gives the same digest whatever the order of its rows."""
    rows = sorted(np.ascontiguousarray(r).tobytes() for r in np.asarray(x, dtype=np.float64))
    return hashlib.sha1(b"".join(rows)).hexdigest()[:16]


class LoggedClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression that appends every fit to ``log`` (``ok``/``fail``, size, subset
    digest) before fitting: it fails, as LogisticRegression does, on a one-class subset, so
    a test can tell exactly which subsets were evaluated, and which of them failed."""

    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, log: str = "", C: float = 1.0, max_iter: int = 1000, random_state: int = 0
    ) -> None:
        self.log = log
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, x: Any, y: Any) -> LoggedClassifier:
        ok = len(np.unique(y)) > 1
        if self.log:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(f"{'ok' if ok else 'fail'} {len(x)} {subset_digest(x)}\n")
        self.model_ = LogisticRegression(
            C=self.C, max_iter=self.max_iter, random_state=self.random_state
        ).fit(x, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, x: Any) -> Any:
        return self.model_.predict(x)


def read_log(path: Any) -> list[tuple[str, int, str]]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        status, size, digest = line.split()
        out.append((status, int(size), digest))
    return out
