"""The pyDVL 0.7-style ``memcached`` decorator, accepted unchanged on expcache's core.

Existing code writes ``memcached(**asdict(cache_options))(fun, signature=...)``; that keeps
working. What changes underneath (see the README for the list): keys include closures, globals
and data; the tolerance uses ``|mean|``; ``min_repetitions`` is exact; running moments are
updated atomically; stores are acknowledged; large values are chunked; a dead server costs a
counted fallback, not a crash; entries can be signed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymemcache.serde import PickleSerde

from .backends.memcached import MemcachedBackend
from .errors import ConfigError
from .memoize import Memoized
from .policy import RepetitionPolicy

__all__ = ["PICKLE_VERSION", "MemcachedClientConfig", "memcached"]

R = TypeVar("R")

PICKLE_VERSION = 5  # the seed's fixed protocol: readable by every supported Python


@dataclass
class MemcachedClientConfig:
    """Client settings; ``asdict(config)`` is valid keyword arguments of a pymemcache client.

    ``serde`` is kept for that compatibility: expcache itself always stores its own verified
    envelope (bytes), whatever serde is configured here.
    """

    server: tuple[str, int] = ("localhost", 11211)
    connect_timeout: float = 1.0
    timeout: float = 0.1
    no_delay: bool = True
    # compare=False: PickleSerde has no __eq__, and asdict() deep-copies it, so configs that
    # went through asdict() would otherwise never compare equal to the original.
    serde: PickleSerde = field(
        default_factory=lambda: PickleSerde(pickle_version=PICKLE_VERSION), compare=False
    )


def _client_config(client_config: MemcachedClientConfig | Mapping[str, Any] | None) -> MemcachedClientConfig:
    if client_config is None:
        return MemcachedClientConfig()
    if isinstance(client_config, MemcachedClientConfig):
        return dataclasses.replace(client_config)
    if isinstance(client_config, Mapping):
        names = {f.name for f in dataclasses.fields(MemcachedClientConfig)}
        unknown = sorted(set(client_config) - names)
        if unknown:
            raise ConfigError(
                f"client_config: unknown key(s) {unknown}; accepted: {sorted(names)}"
            )
        values = dict(client_config)
        if isinstance(values.get("server"), list):
            values["server"] = tuple(values["server"])
        return MemcachedClientConfig(**values)
    raise ConfigError(
        f"client_config={client_config!r}: expected a MemcachedClientConfig, a dict or None"
    )


def memcached(
    client_config: MemcachedClientConfig | Mapping[str, Any] | None = None,
    time_threshold: float = 0.3,
    allow_repeated_evaluations: bool = False,
    rtol_stderr: float = 0.1,
    min_repetitions: int = 3,
    ignore_args: Iterable[str] | None = None,
) -> Callable[..., Memoized[..., Any]]:
    """Seed-compatible decorator factory: ``memcached(...)(fun, signature=None)``.

    The returned object is a ``Memoized`` named ``memcached_<fun name>`` with the effective
    client configuration in ``.config``. With ``allow_repeated_evaluations`` each call folds a
    new evaluation into the running mean until ``min_repetitions`` values are in and the
    standard error is at most ``rtol_stderr * |mean|``; the current mean is returned.
    """
    config = _client_config(client_config)
    policy = (
        RepetitionPolicy(min_repetitions=min_repetitions, rtol_stderr=rtol_stderr)
        if allow_repeated_evaluations
        else None
    )

    def wrapper(fun: Callable[..., R], signature: bytes | None = None) -> Memoized[..., R]:
        backend = MemcachedBackend(
            [config.server],
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
            no_delay=config.no_delay,
        )
        name = getattr(fun, "__name__", type(fun).__name__)
        wrapped: Memoized[..., R] = Memoized(
            fun,
            backend,
            time_threshold=time_threshold,
            repeat=policy,
            ignore_args=ignore_args or (),
            signature=signature,
            name=f"memcached_{name}",
        )
        wrapped.__doc__ = (
            f"A wrapper around {name}() with remote caching enabled.\n"
            + (getattr(fun, "__doc__", None) or "")
        )
        wrapped.config = config
        return wrapped

    return wrapper

