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

__all__ = ["CacheContext", "MemoPolicy", "identity_of", "relocate"]

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


def identity_of(memo: Memoized[..., Any]) -> str | None:
    """The hex identity digest of ``memo``'s function (what its keys are derived from: code,
    or ``signature=``, plus version, namespace, label and key format), or None if it cannot
    be computed."""
    try:
        identity = memo.identity
    except Exception as exc:  # an unencodable function: its calls would fail the same way
        log.debug("expcache: no identity for %r: %r", memo, exc)
        return None
    return identity.hex() if isinstance(identity, bytes) else None


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
        self._call_seconds: dict[str, float] = {}

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

    def wrap_private(
        self, fn: Callable[..., Any], *, name: str, **options: Any
    ) -> Memoized[..., Any]:
        """``fn`` memoized on the run's backend, namespace and signing key, but with
        ``options`` instead of the run's policy and outside the run's records (``stats``,
        ``summary``, ``identities``): for what the app derives from a run's results (the
        values plot), which the user did not ask to cache and whose hits are not the run's
        calls. Its entries are ordinary entries of the namespace (under ``name``), so
        ``expcache cache clear`` removes them with the rest."""
        return Memoized(
            fn,
            self.backend,
            namespace=self.namespace,
            signing_key=self._signing_key,
            name=name,
            **options,
        )

    def add_stats(self, name: str, stats: CacheStats) -> None:
        """Merge counts gathered elsewhere (e.g. by copies in worker processes) under ``name``."""
        self._extra[name] = self._extra.get(name, CacheStats()) + stats

    def add_call_seconds(self, name: str, seconds: float) -> None:
        """Record wall time a task measured around the calls of ``name`` (lookups, stores and
        computing), so the summary can say what the cache saved -- or cost."""
        self._call_seconds[name] = self._call_seconds.get(name, 0.0) + float(seconds)

    def identities(self) -> dict[str, list[str]]:
        """Identity digests of the memoized callables, per name (one per signature: the
        valuation utility has one per dataset it was bound to)."""
        out: dict[str, list[str]] = {}
        for name, memos in sorted(self._memoized.items()):
            found = (identity_of(m) for m in memos)
            out[name] = sorted({i for i in found if i is not None})
        return out

    def timing(self, name: str | None = None) -> dict[str, float] | None:
        """Measured time of the calls of ``name`` (all names when None) against what they
        would have cost uncached; None when no task measured its calls."""
        names = self.names() if name is None else [name]
        measured = [n for n in names if n in self._call_seconds]
        if not measured:
            return None
        stats = sum((self.stats(n) for n in measured), CacheStats())
        cached = sum(self._call_seconds[n] for n in measured)
        uncached = stats.compute_seconds + stats.saved_seconds
        return {
            "call_seconds": cached,
            "uncached_seconds": uncached,
            "time_saved": uncached - cached,
        }

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
            "timing": self._timings(),
        }

    def _timings(self) -> dict[str, Any] | None:
        total = self.timing()
        if total is None:
            return None
        per = {n: self.timing(n) for n in self.names() if n in self._call_seconds}
        return {**total, "functions": per}

    def close(self) -> None:
        """Drop the backend's connections (the run is over)."""
        try:
            self.backend.close()
        except Exception as exc:  # closing must never hide the run's own outcome
            log.debug("expcache: closing %r failed: %r", self.backend, exc)

    def __repr__(self) -> str:
        return f"CacheContext({self.backend!r}, policy={self.policy!r})"
