"""What a task receives: one backend and the configured policy, applied to any callable.

A task never sees Hydra's ``cache``/``policy`` nodes: it asks the context to ``wrap`` its
expensive callables, and the context remembers every memoized callable it built so that the
run can write what the cache did (``summary()``) into the job folder. Counters gathered in
other processes (a memoized callable pickled into joblib workers starts with zeroed stats
there) are merged back with ``add_stats``. Nothing here imports Hydra: a notebook can build a
context by hand.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..errors import ConfigError
from ..memoize import Memoized
from ..policy import RepetitionPolicy
from ..stats import CacheStats

__all__ = ["CacheContext", "MemoPolicy", "relocate"]

log = logging.getLogger("expcache")


def relocate(
    exc: ConfigError, sections: Mapping[str, Collection[str]], default: str | None = None
) -> ConfigError:
    """Put ``exc`` under the config section that holds its parameter.

    ``sections`` maps a section (``"policy"``) to the options it holds. A parameter no section
    holds (an environment variable such as ``EXPCACHE_SIGNING_KEY``) stays as it is; an error
    about no parameter gets ``default`` as its prefix (or stays as it is without one).
    """
    if exc.param is None:
        return exc.located(default) if default else exc
    head = exc.param.split(".", 1)[0].split("[", 1)[0]
    for section, options in sections.items():
        if head in options:
            return exc.located(section)
    return exc


@dataclass(frozen=True)
class MemoPolicy:
    """The ``policy`` group, built: ``Memoized`` keyword options, and a ``RepetitionPolicy``
    when the function is stochastic (re-evaluated until its running mean has converged)."""

    options: Mapping[str, Any] = field(default_factory=dict)
    repeat: RepetitionPolicy | None = None

    @property
    def option(self) -> str:
        return "deterministic" if self.repeat is None else "stochastic"

    def memoize(
        self, fn: Callable[..., Any], backend: Backend, **overrides: Any
    ) -> Memoized[..., Any]:
        return Memoized(fn, backend, **{"repeat": self.repeat, **self.options, **overrides})

    def describe(self) -> dict[str, Any]:
        repeat = dataclasses.asdict(self.repeat) if self.repeat is not None else {}
        return {"option": self.option, **repeat, **self.options}


class CacheContext:
    """Builds memoized callables with the composed cache + policy and keeps their stats.

    ``backend_info`` is written into ``cache_stats.json`` as is (it records, e.g., a fallback
    to no caching at start).
    """

    def __init__(
        self,
        backend: Backend,
        policy: MemoPolicy | None = None,
        *,
        namespace: str = "",
        signing_key: str | bytes | None = None,
        backend_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy if policy is not None else MemoPolicy()
        self.namespace = namespace
        self._signing_key = signing_key
        self.backend_info: dict[str, Any] = dict(backend_info or backend.describe())
        self._memoized: dict[str, list[Memoized[..., Any]]] = {}
        self._extra: dict[str, CacheStats] = {}

    def wrap(
        self, fn: Callable[..., Any], *, name: str | None = None, **overrides: Any
    ) -> Memoized[..., Any]:
        """``fn`` memoized with the policy; ``overrides`` win over it (e.g. ``signature=``).

        Callables wrapped under the same ``name`` are reported together. A policy option that
        does not fit ``fn`` (``ignore_args`` naming a parameter it lacks) is reported as the
        policy's (``policy.ignore_args``).
        """
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        options: dict[str, Any] = {
            "namespace": self.namespace,
            "signing_key": self._signing_key,
            "name": name,
            **overrides,
        }
        try:
            memo = self.policy.memoize(fn, self.backend, **options)
        except ConfigError as exc:
            mine = set(self.policy.options) - set(overrides)
            raise relocate(exc, {"policy": mine}, default="policy") from None
        self._memoized.setdefault(name, []).append(memo)
        return memo

    def add_stats(self, name: str, stats: CacheStats) -> None:
        """Merge counts gathered elsewhere (e.g. by copies in worker processes) under ``name``."""
        self._extra[name] = self._extra.get(name, CacheStats()) + stats

    def stats(self, name: str | None = None) -> CacheStats:
        """Counters of the callables wrapped under ``name`` (all of them when ``None``)."""
        names = self.names() if name is None else [name]
        total = CacheStats()
        for n in names:
            for memo in self._memoized.get(n, []):
                total = total + memo.stats
            total = total + self._extra.get(n, CacheStats())
        return total

    def names(self) -> list[str]:
        return sorted(self._memoized.keys() | self._extra.keys())

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counters per memoized callable and in total, the backend, the policy."""
        return {
            "backend": dict(self.backend_info),
            "namespace": self.namespace,
            "signed": bool(self._signing_key)
            or any(memo.serde.signed for memos in self._memoized.values() for memo in memos),
            "policy": self.policy.describe(),
            "functions": {name: self.stats(name).as_dict() for name in self.names()},
            "total": self.stats().as_dict(),
        }

    def close(self) -> None:
        """Drop the backend's connections (the run is over)."""
        try:
            self.backend.close()
        except Exception as exc:  # closing must never hide the run's own outcome
            log.debug("expcache: closing %r failed: %r", self.backend, exc)

    def __repr__(self) -> str:
        return f"CacheContext({self.backend!r}, policy={self.policy!r})"
