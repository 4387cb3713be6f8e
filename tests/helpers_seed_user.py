"""Code as a pyDVL 0.7 user wrote it, with only the import line changed to expcache.

Module-level functions decorated with ``memcached(**asdict(options))(fun, signature=...)``,
options kept in the user's own dataclasses (not expcache's), and a MapReduceJob-style
parallel job: map functions taking ``*args, **kwargs`` that receive ``job_id``/``run_id``
keywords they never use, and a ``SeedSequence`` as their seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from expcache import memcached  # was: from pydvl.utils import memcached


@dataclass(frozen=True)
class UserClientConfig:
    """Not expcache's class: the user's (or pyDVL's) own, with the same fields."""

    server: tuple[str, int] = ("localhost", 11211)
    connect_timeout: float = 1.0
    timeout: float = 0.1
    no_delay: bool = True


@dataclass
class UserCacheOptions:
    client_config: UserClientConfig = field(default_factory=UserClientConfig)
    time_threshold: float = 0.3
    allow_repeated_evaluations: bool = False
    rtol_stderr: float = 0.1
    min_repetitions: int = 3
    ignore_args: Iterable[str] | None = None


def train_and_score(indices: np.ndarray, *args: Any, seed: np.random.SeedSequence,
                    **kwargs: Any) -> float:
    """A map function of a parallel job: the subset, a seed sequence, and whatever the
    job framework adds (``job_id``, ``run_id``) in ``**kwargs``; ``run_log`` is the test's
    (loky workers outlive a test, so an environment variable would not reach them)."""
    with open(kwargs["run_log"], "a") as f:
        f.write(f"{os.getpid()} map\n")
    rng = np.random.default_rng(seed)
    return float(indices.sum() + rng.integers(0, 1000))


def cached_map(port: int) -> Any:
    options = UserCacheOptions(
        client_config=UserClientConfig(server=("127.0.0.1", port), timeout=5.0),
        time_threshold=0,
        ignore_args=["job_id", "run_id", "run_log"],
    )
    return memcached(**asdict(options))(train_and_score, signature=b"train-and-score-v1")


def map_reduce(port: int, n_jobs: int, run_id: int, run_log: str, seed: int = 42) -> list[float]:
    """The job: one task per chunk, each worker with its own copy of the cached function."""
    fn = cached_map(port)
    children = np.random.SeedSequence(seed).spawn(6)
    chunks = [np.arange(i, i + 10) for i in range(6)]
    return list(
        Parallel(n_jobs=n_jobs)(
            delayed(fn)(chunk, seed=child, job_id=i, run_id=run_id, run_log=run_log)
            for i, (chunk, child) in enumerate(zip(chunks, children, strict=True))
        )
    )
