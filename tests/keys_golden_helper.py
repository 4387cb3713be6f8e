"""Module-level fixtures for ``tests/test_keys.py``.

They live in an importable module (not in the test file) so that a subprocess with another
``PYTHONHASHSEED`` can import the very same function and compute its key.
"""

from __future__ import annotations

import sys

from expcache.keys import KeyMaker

WEIGHTS = {"l2": 0.5, "l1": 0.0, "names": frozenset({"alpha", "beta", "gamma"})}


def _scale(x: float) -> float:
    return x * WEIGHTS["l2"]  # type: ignore[operator]


def experiment(
    data: dict[str, int], names: set[str], label: str = "run", *, seed: int = 0
) -> float:
    """Refers to a helper function and to global data, both part of its identity."""
    return _scale(sum(data.values()) + len(names) + len(label) + seed)


def golden_key() -> str:
    """A call whose arguments iterate in hash-seed-dependent order (str set, dict)."""
    data = {"b": 2, "a": 1, "zeta": 26}
    names = {"x", "y", "zeta", "omega", "ünï"}
    return KeyMaker(experiment, namespace="golden")((data, names), {"seed": 7})


if __name__ == "__main__":
    sys.stdout.write(golden_key())
