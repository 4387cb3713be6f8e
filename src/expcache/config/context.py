"""What a task receives: one backend and the configured policy, applied to any callable.

A task never sees Hydra's ``cache``/``policy`` nodes: it asks the context to ``wrap`` its
expensive callables, and the context remembers every memoized callable it built so that the
run can write what the cache did (``summary()``) into the job folder. Counters gathered in
other processes (a memoized callable pickled into joblib workers starts with zeroed stats
there) are merged back with ``add_stats``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..backends.base import Backend
from ..errors import ConfigError
from ..memoize import Memoized
from ..stats import CacheStats

__all__ = ["CacheContext"]

log = logging.getLogger("expcache")


class CacheContext:
    """Builds memoized callables with the composed cache + policy and keeps their stats.

    ``factory(fn, backend, **kwargs) -> Memoized`` is the instantiated ``policy`` (a partial
    of ``Memoized`` or of ``build.stochastic_memoizer``). ``backend_info`` is written into
    ``cache_stats.json`` as is (it records, e.g., a fallback to no caching at start).
    """

    def __init__(
        self,
        backend: Backend,
        factory: Callable[..., Memoized[..., Any]],
        *,
        namespace: str = "",
        signing_key: str | bytes | None = None,
        policy: Mapping[str, Any] | None = None,
        backend_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.factory = factory
        self.namespace = namespace
        self._signing_key = signing_key
        self.policy: dict[str, Any] = dict(policy or {})
        self.backend_info: dict[str, Any] = dict(backend_info or backend.describe())
        self._memoized: dict[str, list[Memoized[..., Any]]] = {}
        self._extra: dict[str, CacheStats] = {}

    def wrap(
        self, fn: Callable[..., Any], *, name: str | None = None, **overrides: Any
    ) -> Memoized[..., Any]:
        """``fn`` memoized with the policy; ``overrides`` win over it (e.g. ``signature=``).

        Callables wrapped under the same ``name`` are reported together.
        """
        if name is None:
            name = getattr(fn, "__name__", None) or type(fn).__name__
        options: dict[str, Any] = {
            "namespace": self.namespace,
            "signing_key": self._signing_key,
            "name": name,
        }
        options.update(overrides)
        try:
            memo = self.factory(fn, self.backend, **options)
        except ConfigError as exc:
            # e.g. "ignore_args names ['job'] that f() does not have": say it is the policy's.
            message = str(exc)
            key = re.split(r"[=: ]", message, maxsplit=1)[0]
            if key in self.policy and key not in overrides:
                raise ConfigError(f"policy.{message} (wrapping {name!r})") from None
            raise
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
            "signed": self._signing_key is not None
            or any(memo.serde.signed for memos in self._memoized.values() for memo in memos),
            "policy": dict(self.policy),
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
