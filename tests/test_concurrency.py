"""Concurrency for real: spawn-started processes sharing one memcached server or disk cache.

Workers live in ``helpers_workers`` and report through a ``multiprocessing`` queue; the tests
block on that queue, on a FIFO "gate" and on process exits, never on a clock.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache import CacheStats, Memoized, MemoryBackend, RepetitionPolicy
from expcache.backends import Backend
from expcache.entries import MomentsEntry

from . import helpers_workers as hw
from .conftest import MemcachedServer

SPAWN = multiprocessing.get_context("spawn")
N_PROCS = 8
WAIT = 60  # seconds: a safety net against a hung worker, not a timing assumption


@pytest.fixture(params=["memcached", "disk"])
def shared_location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "memcached":
        server: MemcachedServer = request.getfixturevalue("memcached")
        return "memcached", server.address
    return "disk", str(tmp_path / "cache")


@contextmanager
def workers(
    target: Any, args: list[tuple[Any, ...]], before_join: Callable[[], None] = lambda: None
) -> Iterator[list[Any]]:
    procs = [SPAWN.Process(target=target, args=a, daemon=True) for a in args]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        before_join()  # e.g. open the gate, so a failed assertion does not strand workers
        for p in procs:
            p.join(WAIT)
            if p.is_alive():  # only after a failure elsewhere: do not leave strays behind
                p.kill()
                p.join()


def collect(events: Any, n_results: int) -> tuple[dict[int, tuple[Any, CacheStats]], list[Any]]:
    """Read the queue until ``n_results`` workers reported; also return the other events."""
    results: dict[int, tuple[Any, CacheStats]] = {}
    others: list[Any] = []
    while len(results) < n_results:
        event = events.get(timeout=WAIT)
        if event[0] == "result":
            results[event[1]] = (event[2], CacheStats.from_dict(event[3]))
        else:
            others.append(event)
    return results, others


def total(stats: list[CacheStats]) -> CacheStats:
    out = CacheStats()
    for s in stats:
        out = out + s
    return out


# -- exact running moments under contention ------------------------------------------------------
def test_eight_processes_hundred_calls_exact_moments(
    shared_location: tuple[str, str], tmp_path: Path
) -> None:
    kind, location = shared_location
    events = SPAWN.Queue()
    samples = [tmp_path / f"samples-{i}.txt" for i in range(N_PROCS)]
    args = [(kind, location, 100, str(samples[i]), 1000 + i, events, i) for i in range(N_PROCS)]
    with workers(hw.moments_worker, args):
        results, _ = collect(events, N_PROCS)

    drawn = np.array([float(v) for p in samples for v in p.read_text().split()])
    assert drawn.size == 800
    backend = hw.make_backend(kind, location)
    reader = Memoized(hw.noisy, backend, repeat=hw.NEVER_STOP, signature=b"noisy")
    key = reader.cache_key(-2.0)
    entry = reader.serde.loads(key, backend.get(key))
    assert isinstance(entry, MomentsEntry)
    n, mean, m2 = entry.moments.n, entry.moments.mean, entry.moments.m2
    assert n == 800  # no lost update
    assert mean == pytest.approx(np.mean(drawn), rel=1e-12, abs=1e-12)
    assert m2 / (n - 1) == pytest.approx(np.var(drawn, ddof=1), rel=1e-10)

    s = total([st for _, st in results.values()])
    assert s.misses + s.repeats == 800 and s.sets == 800
    assert s.hits == 0 and s.conflicts == 0  # a re-evaluation is a repeat, never a hit
    assert s.misses >= 1


def test_cas_retries_exhausted_still_returns_the_evaluation(any_backend: Backend) -> None:
    """A deterministic interleaving: the function itself updates the entry (through another
    memoized function with the same signature) between our read and our write."""
    never = RepetitionPolicy(min_repetitions=10**9)

    def inner_fn(x: int) -> float:
        return 5.0

    inner = Memoized(inner_fn, any_backend, repeat=never, signature=b"contended", name="c")

    def outer_fn(x: int) -> float:
        inner(x)
        return 1.0

    def outer(retries: int) -> Memoized[..., float]:
        return Memoized(
            outer_fn, any_backend, repeat=never, signature=b"contended", name="c",
            max_cas_retries=retries,
        )

    stubborn = outer(1)
    assert stubborn(0) == 1.0  # add lost to inner's add; the evaluation comes back anyway
    assert stubborn.stats.conflicts == 1 and stubborn.stats.sets == 0
    assert stubborn(0) == pytest.approx(3.0)  # our read (5.0) + our sample (1.0)
    assert stubborn.stats.conflicts == 2

    patient = outer(2)
    assert patient(0) == pytest.approx((5.0 * 3 + 1.0) / 4)  # folded into inner's newer state
    assert patient.stats.conflicts == 0 and patient.stats.sets == 1
    reader = outer(1)
    key = reader.cache_key(0)
    assert reader.serde.loads(key, any_backend.get(key)).moments.n == 4  # 3 from inner + ours


# -- one computation per cold key ----------------------------------------------------------------
@contextmanager
def gate(path: Path) -> Iterator[Any]:
    """A FIFO the gated function opens for reading: it blocks until ``release()`` opens the
    write end, which stays open so every later reader passes straight through."""
    os.mkfifo(path)
    fds: list[int] = []

    def release() -> None:
        if not fds:
            fds.append(os.open(path, os.O_RDWR))

    try:
        yield release
    finally:
        release()  # never leave a worker blocked behind a failed assertion
        os.close(fds[0])


def test_stampede_one_computation_for_eight_processes(
    shared_location: tuple[str, str], tmp_path: Path
) -> None:
    kind, location = shared_location
    events = SPAWN.Queue()
    runs = tmp_path / "runs.log"
    with gate(tmp_path / "gate") as release:
        args = [
            (kind, location, str(tmp_path / "gate"), events, str(runs), 10.0, i)
            for i in range(N_PROCS)
        ]
        with workers(hw.stampede_worker, args, release):
            lookups: list[bool] = []
            computing: list[int] = []
            while len(lookups) < N_PROCS or not computing:
                event = events.get(timeout=WAIT)
                assert event[0] in ("lookup", "computing"), f"finished before the gate: {event}"
                if event[0] == "lookup":
                    lookups.append(event[2])
                else:
                    computing.append(event[1])
                    assert len(computing) == 1, "a second worker computes the same cold key"
            # All eight looked the key up and missed while the value did not exist yet.
            assert lookups == [False] * N_PROCS
            release()
            results, late = collect(events, N_PROCS)

    assert [value for value, _ in results.values()] == [49] * N_PROCS
    assert hw.runs(runs, "gated") == 1  # it ran exactly once
    assert [e for e in late if e[0] == "computing"] == []
    s = total([st for _, st in results.values()])
    assert (s.misses, s.hits, s.sets) == (1, N_PROCS - 1, 1)
    assert s.lease_waits <= N_PROCS - 1


def test_lease_holder_killed_mid_computation(
    shared_location: tuple[str, str], tmp_path: Path
) -> None:
    kind, location = shared_location
    events = SPAWN.Queue()
    runs = tmp_path / "runs.log"
    with gate(tmp_path / "gate") as release:
        args = [
            (kind, location, str(tmp_path / "gate"), events, str(runs), 2.0, i)
            for i in range(N_PROCS)
        ]
        with workers(hw.stampede_worker, args, release) as procs:
            lookups = 0
            holder = 0
            while lookups < N_PROCS or not holder:
                event = events.get(timeout=WAIT)
                assert event[0] in ("lookup", "computing"), f"finished before the gate: {event}"
                if event[0] == "lookup":
                    lookups += 1
                else:
                    assert not holder, "a second worker computes the same cold key"
                    holder = event[1]
            victim = next(p for p in procs if p.pid == holder)
            os.kill(holder, signal.SIGKILL)
            victim.join(WAIT)
            assert victim.exitcode == -signal.SIGKILL
            release()  # whoever takes over computes straight away
            results, late = collect(events, N_PROCS - 1)

    assert [value for value, _ in results.values()] == [49] * (N_PROCS - 1)
    takers = [e[1] for e in late if e[0] == "computing"]
    assert len(takers) == 1 and takers[0] != holder  # exactly one survivor took over
    assert hw.runs(runs, "gated") == 2 and hw.runs(runs, "gated", holder) == 1
    s = total([st for _, st in results.values()])
    assert (s.misses, s.hits, s.sets) == (1, N_PROCS - 2, 1)


def test_process_local_backends_keep_no_lease_item() -> None:
    m = Memoized(lambda x: x, MemoryBackend())
    m(1)
    assert m.backend.get(m.cache_key(1) + ":lease") is None  # the lease is in-process only
    assert m.stats.lease_waits == 0


def test_threads_share_one_memoized_function(shared_backend: Backend) -> None:
    """pymemcache clients are not thread-safe: each thread must get its own connection."""

    def triple(x: int) -> int:
        return 3 * x

    m = Memoized(triple, shared_backend)
    calls = [i % 20 for i in range(1600)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(m, calls))
    assert results == [3 * x for x in calls]
    s = m.stats
    assert (s.errors, s.timeouts, s.corrupt) == (0, 0, 0)
    assert s.misses == 20 and s.hits == 1600 - 20  # one computation per key, across threads
