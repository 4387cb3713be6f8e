"""When to stop re-evaluating a stochastic function, and the running moments it needs.

The stopping rule (documented in the README, with a worked example)::

    stop once  n >= min_repetitions  and  stderr <= max(rtol_stderr * |mean|, atol_stderr)
    or once    n >= max_repetitions

``stderr`` is the standard error of the mean, ``sqrt(var / n)`` with the unbiased sample
variance ``var = M2 / (n - 1)``. Comparing with ``|mean|`` (not the signed mean, as the seed
did) lets negative means converge, and ``atol_stderr`` lets means near zero converge.
For array-valued functions the rule must hold for every element.

Moments are kept as ``(n, mean, M2)`` so that a new sample is folded in with Welford's update
and two partial aggregates merge exactly with Chan et al.'s formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _validate as _v

__all__ = ["Moments", "RepetitionPolicy", "is_finite"]


@dataclass(frozen=True)
class Moments:
    """Running count, mean and sum of squared deviations of the samples seen so far."""

    n: int
    mean: Any
    m2: Any

    @classmethod
    def of(cls, value: Any) -> Moments:
        return cls(1, _as_number(value), _zeros_like(value))

    def add(self, value: Any) -> Moments:
        """Welford's update with one new sample."""
        x = _as_number(value)
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        m2 = self.m2 + delta * (x - mean)
        return Moments(n, mean, m2)

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s exact combination of two partial aggregates."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / n)
        return Moments(n, mean, m2)

    @property
    def variance(self) -> Any:
        """Unbiased sample variance (ddof=1); infinite with fewer than two samples."""
        if self.n < 2:
            return _full_like(self.mean, math.inf)
        return self.m2 / (self.n - 1)

    @property
    def stderr(self) -> Any:
        """Standard error of the mean."""
        if self.n < 2:
            return _full_like(self.mean, math.inf)
        return np.sqrt(self.variance / self.n) if isinstance(self.mean, np.ndarray) else math.sqrt(
            self.variance / self.n
        )


@dataclass(frozen=True)
class RepetitionPolicy:
    """How many times to evaluate a stochastic function per key (see module docstring)."""

    min_repetitions: int = 3
    rtol_stderr: float = 0.1
    atol_stderr: float = 0.0
    max_repetitions: int | None = None

    def __post_init__(self) -> None:
        _v.integer("min_repetitions", self.min_repetitions, ge=1)
        _v.number("rtol_stderr", self.rtol_stderr, ge=0)
        _v.number("atol_stderr", self.atol_stderr, ge=0)
        _v.integer(
            "max_repetitions",
            self.max_repetitions,
            ge=self.min_repetitions,
            allow_none=True,
            hint=f"null means no cap; a cap must be >= min_repetitions ({self.min_repetitions})",
        )

    def done(self, m: Moments) -> bool:
        """Whether ``m`` has converged, so the mean is returned without evaluating."""
        if self.max_repetitions is not None and m.n >= self.max_repetitions:
            return True
        if m.n < self.min_repetitions:
            return False
        if m.n < 2:
            # A single sample has no error estimate; only a zero tolerance-free rule
            # (min_repetitions=1) accepts it.
            return True
        if type(m.mean) is float:  # the common case, ~30x cheaper than numpy on scalars
            # max() keeps a NaN M2 as NaN (never converged) and clips rounding below zero
            stderr = math.sqrt(max(m.m2, 0.0) / (m.n - 1) / m.n)
            return stderr <= max(self.rtol_stderr * abs(m.mean), self.atol_stderr)
        tol = np.maximum(self.rtol_stderr * np.abs(m.mean), self.atol_stderr)
        return bool(np.all(m.stderr <= tol))


def is_finite(value: Any) -> bool:
    """Whether a numeric sample (a number or an array) has no NaN or infinite element.

    One NaN folded into ``(n, mean, M2)`` makes the mean NaN for ever and the stopping rule
    never holds again, so such samples are returned but never recorded.
    """
    if type(value) is float:
        return math.isfinite(value)
    x = _as_number(value)
    if isinstance(x, np.ndarray):
        return bool(np.isfinite(x).all())
    return math.isfinite(x)


def _as_number(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=True)
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        return np.asarray(value, dtype=np.float64).copy()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"repeated evaluation needs numeric results (a number or an array); got "
            f"{type(value).__name__}"
        ) from exc


def _zeros_like(value: Any) -> Any:
    x = _as_number(value)
    return np.zeros_like(x) if isinstance(x, np.ndarray) else 0.0


def _full_like(value: Any, fill: float) -> Any:
    return np.full_like(value, fill) if isinstance(value, np.ndarray) else fill
