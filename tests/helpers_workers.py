"""Functions run in spawn-started worker processes (they must be importable by name there).

Runs are counted through a file written with ``O_APPEND`` (one short line per run, atomic on
Linux), named by the environment variable ``EXPCACHE_TEST_RUNS``, so parent and children can
share one log and tell whose runs are whose by PID. The memoized functions here reference only
modules, functions and constants, so their derived identity (which hashes referenced globals)
is the same in every process.

The multi-process tests talk to their workers through a ``multiprocessing`` queue: workers
post ``("lookup", pid, found)`` after their first lookup, ``("computing", pid)``
when the function body starts, and ``("result", index, value, stats)`` at the end. The test
blocks on that queue, never on a clock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from expcache import DiskBackend, MemcachedBackend, Memoized, RepetitionPolicy
from expcache.backends import Backend

RUNS_ENV = "EXPCACHE_TEST_RUNS"


def record(event: str) -> None:
    """Append ``"<pid> <event>"`` to the run log named by ``$EXPCACHE_TEST_RUNS``."""
    path = os.environ.get(RUNS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {event}\n".encode())
    finally:
        os.close(fd)


def runs(path: str | os.PathLike[str], event: str, pid: int | None = None) -> int:
    """How many ``event`` lines the run log holds (of one process, if ``pid`` is given)."""
    p = Path(path)
    if not p.exists():
        return 0
    count = 0
    for line in p.read_text().splitlines():
        who, _, what = line.partition(" ")
        if what == event and (pid is None or int(who) == pid):
            count += 1
    return count


# -- pickling into a spawned child ---------------------------------------------------------------
def square(x: int) -> int:
    """The square of x, logged as a run."""
    record("square")
    return x * x


def call_in_child(memo: Any, calls: list[tuple[Any, ...]], runs_path: str) -> dict[str, Any]:
    """Receives a pickled memoized function, calls it, reports what happened here."""
    os.environ[RUNS_ENV] = runs_path
    results = [memo(*args) for args in calls]
    return {
        "pid": os.getpid(),
        "results": results,
        "stats": memo.stats.as_dict(),
        "runs": runs(runs_path, "square", os.getpid()),
        "name": memo.__name__,
    }


# -- instrumented backends -----------------------------------------------------------------------
class _Observed:
    """Posts every first lookup of an entry (a ``get``) and whether it found one: the miss
    that sends a worker to take the stampede lease, whatever the lease is made of (a store
    item on memcached, a file lock on disk)."""

    events: Any = None
    posted = False

    def get(self, key: str) -> bytes | None:
        found: bytes | None = super().get(key)  # type: ignore[misc]
        if self.events is not None and not self.posted and not key.endswith(":lease"):
            self.posted = True  # the first lookup only: waiters poll with get on disk
            self.events.put(("lookup", os.getpid(), found is not None))
        return found


class ObservedMemcached(_Observed, MemcachedBackend):
    pass


class ObservedDisk(_Observed, DiskBackend):
    pass


def make_backend(kind: str, location: str, events: Any = None) -> Backend:
    backend: ObservedMemcached | ObservedDisk
    if kind == "memcached":
        backend = ObservedMemcached([location], timeout=5.0)
    elif kind == "disk":
        backend = ObservedDisk(location)
    else:
        raise ValueError(kind)
    backend.events = events
    return backend


# -- one computation per cold key ----------------------------------------------------------------
_EVENTS: Any = None
_GATE = ""


def gated_square(x: int) -> int:
    """Announces itself, then blocks until the test opens the gate (a FIFO it holds open)."""
    record("gated")  # before the event: whoever receives the event may kill us at once
    _EVENTS.put(("computing", os.getpid()))
    with open(_GATE, "rb"):  # opening a FIFO's read end blocks until a writer holds it
        pass
    return x * x


def stampede_worker(
    kind: str, location: str, gate: str, events: Any, runs_path: str, lease_ttl: float, index: int
) -> None:
    global _EVENTS, _GATE
    _EVENTS, _GATE = events, gate
    os.environ[RUNS_ENV] = runs_path
    backend = make_backend(kind, location, events)
    memo = Memoized(gated_square, backend, signature=b"stampede", lease_ttl=lease_ttl)
    value = memo(7)
    events.put(("result", index, value, memo.stats.as_dict()))


# -- atomic running moments ----------------------------------------------------------------------
_RNG = np.random.default_rng()
_SAMPLES = ""


def noisy(x: float) -> float:
    """A stochastic function: ``x`` plus unit noise; every sample is logged exactly (repr)."""
    sample = float(x + _RNG.standard_normal())
    with open(_SAMPLES, "a") as f:
        f.write(f"{sample!r}\n")
    return sample


NEVER_STOP = RepetitionPolicy(min_repetitions=10**9)


def moments_worker(
    kind: str, location: str, n_calls: int, samples: str, seed: int, events: Any, index: int
) -> None:
    global _RNG, _SAMPLES
    _RNG, _SAMPLES = np.random.default_rng(seed), samples
    backend = make_backend(kind, location)
    memo = Memoized(noisy, backend, repeat=NEVER_STOP, signature=b"noisy")
    for _ in range(n_calls):
        memo(-2.0)
    events.put(("result", index, None, memo.stats.as_dict()))
