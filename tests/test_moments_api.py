"""``Memoized.moments``: reading a stochastic call's running moments without evaluating."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from expcache import DiskBackend, Memoized, RepetitionPolicy


def test_moments_follow_the_returned_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    samples: list[float] = []

    def noisy(x: int) -> float:
        samples.append(float(x + rng.normal()))
        return samples[-1]

    policy = RepetitionPolicy(min_repetitions=5)  # a closure over a generator: name it
    f = Memoized(noisy, DiskBackend(tmp_path), repeat=policy, signature=b"noisy-v1")
    assert f.moments(1) is None  # nothing stored yet
    for _ in range(4):
        f(1)
    m = f.moments(1)
    assert m is not None
    assert m.n == 4
    assert m.mean == np.mean(samples)
    assert np.isclose(m.variance, np.var(samples, ddof=1))
    assert len(samples) == 4  # reading evaluated nothing
    assert f.stats.calls == 4


def test_moments_of_a_deterministic_function_are_none(tmp_path: Path) -> None:
    f = Memoized(lambda x: float(x), DiskBackend(tmp_path))
    f(1)
    assert f.moments(1) is None
