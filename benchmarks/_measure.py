"""Interleaved per-call timing: every case runs a short block in every round, in a fresh order.

Why interleave: on a shared 2-vCPU VM the cost of a loopback round trip drifts by 2-3x over
seconds (other processes, frequency, which vCPU wakes). Measuring case A for ten seconds and
then case B for ten seconds turns that drift into a fake difference between A and B. Running a
few calls of every case per round, in a shuffled order, for many rounds, makes every case see
the same noise, so ratios between rows of the same run are meaningful even when the absolute
figures move between runs.

Each call is timed on its own with ``perf_counter_ns`` (the timer's own cost, ~0.1 us, is
reported as a row), so medians and p90 are over calls, not over block averages. The garbage
collector is off while a round runs and collects between rounds, as ``timeit`` does.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "Summary", "run_interleaved", "summarize"]


@dataclass
class Case:
    """One row of the table: a zero-argument callable doing exactly one "call" of the row."""

    name: str
    what: str
    fn: Callable[[], Any]
    reference: str | None = None  # the row this one is compared with (its floor or peer)
    target: float | None = None  # the ceiling for median / reference median
    block: int = 1  # calls per round, set by calibration
    samples: list[list[int]] = field(default_factory=list)  # per round, ns per call


@dataclass
class Summary:
    name: str
    n: int
    median_us: float
    p90_us: float
    min_us: float
    slice_medians_us: list[float]  # the median of each fifth of the rounds (drift check)


def _quantile(sorted_ns: list[int], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list (numpy's default method)."""
    pos = (len(sorted_ns) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ns) - 1)
    return sorted_ns[lo] + (sorted_ns[hi] - sorted_ns[lo]) * (pos - lo)


def _calibrate(case: Case, budget_s: float) -> float:
    """Warm the case up (connections, caches, lazily built state) and estimate one call's cost."""
    perf = time.perf_counter_ns
    costs: list[int] = []
    deadline = perf() + int(budget_s * 1e9)
    while len(costs) < 5 or (perf() < deadline and len(costs) < 200):
        t0 = perf()
        case.fn()
        costs.append(perf() - t0)
    costs.sort()
    return _quantile(costs, 0.5) / 1e9


def run_interleaved(
    cases: list[Case],
    *,
    seconds: float,
    block_seconds: float = 0.002,
    max_block: int = 100,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Fill ``case.samples`` for every case for about ``seconds``; returns the rounds run.

    A block is about ``block_seconds`` of one case (at least one call, at most ``max_block``),
    so a round visits every case within tens of milliseconds: slower drifts hit all rows alike.
    """
    for case in cases:
        cost = _calibrate(case, 0.05)
        case.block = max(1, min(max_block, round(block_seconds / max(cost, 1e-7))))
        case.samples = []
    rng = random.Random(seed)
    order = list(cases)
    perf = time.perf_counter_ns
    started = time.monotonic()
    deadline = started + seconds
    next_report = started + seconds / 10
    rounds = 0
    gc.collect()
    while rounds < 5 or time.monotonic() < deadline:
        rng.shuffle(order)
        gc.disable()
        try:
            for case in order:
                fn = case.fn
                out: list[int] = []
                append = out.append
                for _ in range(case.block):
                    t0 = perf()
                    fn()
                    append(perf() - t0)
                case.samples.append(out)
        finally:
            gc.enable()
        gc.collect(1)
        rounds += 1
        now = time.monotonic()
        if progress is not None and now >= next_report:
            progress(f"{now - started:.0f}/{seconds:.0f} s, {rounds} rounds")
            next_report += seconds / 10
    return rounds


def summarize(case: Case, slices: int = 5) -> Summary:
    flat = sorted(ns for block in case.samples for ns in block)
    if not flat:
        raise ValueError(f"case {case.name!r} has no samples")
    per_slice: list[float] = []
    step = max(1, len(case.samples) // slices)
    for start in range(0, step * slices, step):
        chunk = sorted(ns for block in case.samples[start : start + step] for ns in block)
        if chunk:
            per_slice.append(_quantile(chunk, 0.5) / 1e3)
    return Summary(
        name=case.name,
        n=len(flat),
        median_us=_quantile(flat, 0.5) / 1e3,
        p90_us=_quantile(flat, 0.9) / 1e3,
        min_us=flat[0] / 1e3,
        slice_medians_us=per_slice,
    )
