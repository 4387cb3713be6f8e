"""The pyDVL data-valuation task (``task=valuation``, the default job) and its groups.

``task.ValuationTask`` is the task; ``builders`` holds what its ``data``, ``scorer``,
``utility``, ``method`` and ``parallel`` nodes name; ``report`` writes ``values.csv``, the
plot and the summary. Models and methods are scikit-learn and pyDVL classes, named in their
YAML and checked against their own signatures at plan time (open nodes, see ``schemas``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .builders import (
    JoblibParallel,
    SklearnData,
    SupervisedScoring,
    SyntheticData,
    ValuationData,
    model_utility,
)
from .task import ValuationTask

if TYPE_CHECKING:
    from ...schemas import Schema

__all__ = [
    "JoblibParallel",
    "SklearnData",
    "SupervisedScoring",
    "SyntheticData",
    "ValuationData",
    "ValuationTask",
    "model_utility",
    "schemas",
]


def schemas() -> list[Schema]:
    """The structured configs of the task and of its groups with expcache-owned targets."""
    from ...schemas import Schema

    return [
        Schema.of("task", "valuation", (ValuationTask, {}), target=ValuationTask),
        Schema.of("data", "sklearn", (SklearnData, {}), target=SklearnData),
        Schema.of("data", "synthetic", (SyntheticData, {}), target=SyntheticData),
        Schema.of("scorer", "supervised", (SupervisedScoring, {}), target=SupervisedScoring),
        Schema.of("parallel", "joblib", (JoblibParallel, {}), target=JoblibParallel),
    ]
