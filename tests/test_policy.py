"""The repetition policy's stopping rule and the running moments behind it.

Rule (policy.py): stop once ``n >= min_repetitions`` and
``stderr <= max(rtol_stderr * |mean|, atol_stderr)``, or once ``n >= max_repetitions``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expcache import ConfigError, Memoized, Moments, RepetitionPolicy
from expcache.backends import Backend


def moments_of(samples: Sequence[Any]) -> Moments:
    m = Moments.of(samples[0])
    for x in samples[1:]:
        m = m.add(x)
    return m


def sequence(values: Sequence[Any]) -> tuple[Callable[[int], Any], list[Any]]:
    """A 'stochastic' function that returns ``values`` in order; records what it returned."""
    returned: list[Any] = []

    def draw(x: int) -> Any:
        value = values[len(returned)]
        returned.append(value)
        return value

    return draw, returned


# -- the rule, on moments ------------------------------------------------------------------------
def test_rule_needs_min_repetitions_even_when_the_error_is_zero() -> None:
    policy = RepetitionPolicy(min_repetitions=3, rtol_stderr=0.1)
    assert not policy.done(moments_of([5.0]))
    assert not policy.done(moments_of([5.0, 5.0]))
    assert policy.done(moments_of([5.0, 5.0, 5.0]))


def test_rule_uses_the_absolute_mean() -> None:
    policy = RepetitionPolicy(min_repetitions=3, rtol_stderr=0.1)
    negative = moments_of([-10.0, -10.2, -9.8])  # stderr 0.115 <= 0.1 * 10
    assert policy.done(negative)
    # the seed compared with the signed mean: stderr <= 0.1 * -10 is never true
    assert not negative.stderr <= 0.1 * negative.mean


def test_rule_zero_mean_needs_atol() -> None:
    zero_noisy = moments_of([-1.0, 1.0, -1.0, 1.0])
    assert not RepetitionPolicy(min_repetitions=3, rtol_stderr=0.5).done(zero_noisy)
    assert RepetitionPolicy(min_repetitions=3, rtol_stderr=0.5, atol_stderr=0.6).done(zero_noisy)
    # zero variance converges even at mean 0 with no atol: stderr 0 <= tol 0
    assert RepetitionPolicy(min_repetitions=2).done(moments_of([0.0, 0.0]))


def test_rule_max_repetitions_caps_a_never_converging_series() -> None:
    policy = RepetitionPolicy(min_repetitions=2, rtol_stderr=0.0, max_repetitions=4)
    wild = [1.0, -1.0, 1.0, -1.0]
    assert not policy.done(moments_of(wild[:3]))
    assert policy.done(moments_of(wild))


def test_rule_on_arrays_needs_every_element() -> None:
    policy = RepetitionPolicy(min_repetitions=3, rtol_stderr=0.1)
    ok = [np.array([10.0, 1.0]), np.array([10.1, 1.0]), np.array([9.9, 1.0])]
    bad = [np.array([10.0, 1.0]), np.array([10.1, 2.0]), np.array([9.9, 0.0])]
    assert policy.done(moments_of(ok))
    assert not policy.done(moments_of(bad))  # element 1: stderr 0.58 > 0.1


def test_min_repetitions_one_accepts_a_single_sample() -> None:
    assert RepetitionPolicy(min_repetitions=1).done(moments_of([3.0]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_repetitions": 0}, "min_repetitions"),
        ({"min_repetitions": 2.5}, "min_repetitions"),
        ({"rtol_stderr": -0.1}, "rtol_stderr"),
        ({"atol_stderr": float("nan")}, "atol_stderr"),
        ({"min_repetitions": 5, "max_repetitions": 4}, "max_repetitions"),
    ],
)
def test_policy_validation_names_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RepetitionPolicy(**kwargs)


# -- the rule, through the memoizer, on every backend --------------------------------------------
def test_min_repetitions_means_exactly_that_many_evaluations(any_backend: Backend) -> None:
    draw, returned = sequence([10.0, 10.1, 9.9, 1e6, 1e6])
    m = Memoized(draw, any_backend, repeat=RepetitionPolicy(3, 0.1), signature=b"exact")
    results = [m(1) for _ in range(5)]
    assert returned == [10.0, 10.1, 9.9]  # three evaluations, not four as in the seed
    assert results[0] == 10.0 and results[1] == pytest.approx(10.05)
    assert results[2:] == [pytest.approx(10.0)] * 3  # every call returns the current mean
    s = m.stats
    assert (s.misses, s.repeats, s.hits, s.sets) == (1, 2, 2, 3)
    assert m.check_call_in_cache(1)


def test_negative_mean_converges(any_backend: Backend) -> None:
    draw, returned = sequence([-5.0, -5.1, -4.9, -5.0] + [0.0] * 10)
    m = Memoized(draw, any_backend, repeat=RepetitionPolicy(3, 0.05), signature=b"negative")
    for _ in range(6):
        m(1)
    assert len(returned) == 3
    assert m(1) == pytest.approx(-5.0)


def test_zero_variance_stops_at_min_repetitions(any_backend: Backend) -> None:
    draw, returned = sequence([0.0] * 10)
    m = Memoized(draw, any_backend, repeat=RepetitionPolicy(4, 0.1), signature=b"zero")
    assert [m(1) for _ in range(6)] == [0.0] * 6
    assert len(returned) == 4 and m.stats.hits == 2


def test_max_repetitions_caps_evaluations(any_backend: Backend) -> None:
    draw, returned = sequence([1.0, -1.0] * 10)
    policy = RepetitionPolicy(min_repetitions=2, rtol_stderr=0.01, max_repetitions=5)
    m = Memoized(draw, any_backend, repeat=policy, signature=b"capped")
    means = [m(1) for _ in range(8)]
    assert len(returned) == 5
    assert means[4:] == [pytest.approx(0.2)] * 4
    assert (m.stats.repeats, m.stats.hits) == (4, 3)


def test_array_valued_results(any_backend: Backend) -> None:
    samples = [np.array([1.0, -2.0]), np.array([1.1, -2.2]), np.array([0.9, -1.8])]
    draw, returned = sequence([*samples, np.array([50.0, 50.0])])
    m = Memoized(draw, any_backend, repeat=RepetitionPolicy(3, 0.2), signature=b"arrays")
    for _ in range(3):
        m(1)
    mean = m(1)
    assert len(returned) == 3
    np.testing.assert_allclose(mean, np.mean(samples, axis=0))
    assert isinstance(mean, np.ndarray) and mean.shape == (2,)


def test_hits_and_repeats_are_distinct_counters(any_backend: Backend) -> None:
    draw, _ = sequence([2.0] * 10)
    m = Memoized(draw, any_backend, repeat=RepetitionPolicy(3, 0.1), signature=b"counters")
    for _ in range(7):
        m(1)
    assert (m.stats.misses, m.stats.repeats, m.stats.hits) == (1, 2, 4)
    assert m.stats.evaluations == 3 and m.stats.calls == 7


# -- Welford / Chan ------------------------------------------------------------------------------
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=2, max_size=60), st.data())
def test_welford_and_chan_merge_equal_numpy(samples: list[float], data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=1, max_value=len(samples) - 1))
    whole = moments_of(samples)
    merged = moments_of(samples[:cut]).merge(moments_of(samples[cut:]))
    x = np.asarray(samples)
    scale = max(1.0, float(np.max(np.abs(x))))
    for m in (whole, merged):
        assert m.n == len(samples)
        assert m.mean == pytest.approx(np.mean(x), rel=1e-9, abs=1e-9 * scale)
        assert m.variance == pytest.approx(np.var(x, ddof=1), rel=1e-7, abs=1e-7 * scale**2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=2, max_size=20))
def test_array_moments_equal_numpy(rows: list[list[float]]) -> None:
    x = np.asarray(rows)
    m = moments_of(list(x))
    scale = max(1.0, float(np.max(np.abs(x))))
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(m.variance, x.var(axis=0, ddof=1), rtol=1e-7, atol=1e-7 * scale**2)


def test_merge_with_empty_side_is_identity() -> None:
    m = moments_of([1.0, 2.0])
    empty = Moments(0, 0.0, 0.0)
    assert m.merge(empty) == m and empty.merge(m) == m
