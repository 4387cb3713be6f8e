"""OmegaConf resolvers of expcache, registered once when ``expcache.app`` is imported.

Resolvers return primitives only and have no side effects: a live object (a client, a
connection) returned by a resolver breaks ``OmegaConf.resolve``, ``--cfg job --resolve`` and
YAML dumps, and would be rebuilt on every access. Objects are built by ``instantiate`` instead.
Registration is guarded by ``OmegaConf.has_resolver`` so that importing twice, or every job of
a multirun in one process, does not fail with "already registered".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from ..backends.disk import default_cache_dir

__all__ = ["RESOLVERS", "register_resolvers"]


def _cache_dir() -> str:
    """``${expcache.cache_dir:}``: the per-user cache directory, as a string path."""
    return str(default_cache_dir())


RESOLVERS: dict[str, Callable[..., Any]] = {
    "expcache.cache_dir": _cache_dir,
}


def register_resolvers() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            # use_cache=False: a cached value resolved in the launching process would be
            # copied into every job (omegaconf#637); these are cheap to recompute.
            OmegaConf.register_new_resolver(name, fn, use_cache=False)
