"""The pyDVL 0.7-style ``memcached`` decorator, accepted unchanged on expcache's core.

Existing code writes ``memcached(**asdict(cache_options))(fun, signature=...)``; that keeps
working, with the original's meaning wherever that meaning was not a defect (README,
"Migrating from pyDVL 0.7", lists every deliberate difference):

- ``client_config`` may be this module's ``MemcachedClientConfig``, pyDVL's own, any
  dataclass or object with the same fields, a mapping, or None; it is merged over the
  defaults. A custom ``serde`` in it is the payload codec *inside* expcache's verified
  envelope (integrity and signing still hold); pymemcache's pickle serde is the default.
- ``ignore_args`` names are left out of the key when present; names the function never
  receives are accepted (as the original did).
- Arguments without a canonical encoding are keyed by their pickle, as the original did,
  with one warning per argument (``pickle_args="warn"``; ``False`` makes them an error).
- The wrapper's ``.client`` is a lazily connected pymemcache client for the configured
  server, ``.config`` the effective client configuration, ``.stats`` its counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pymemcache.serde import PickleSerde

from .backends.memcached import MemcachedBackend
from .errors import ConfigError
from .memoize import Memoized
from .policy import RepetitionPolicy

__all__ = ["PICKLE_VERSION", "MemcachedClientConfig", "memcached"]

R = TypeVar("R")

PICKLE_VERSION = 5  # the seed's fixed protocol: readable by every supported Python
_FIELDS = ("server", "connect_timeout", "timeout", "no_delay", "serde")


@dataclass(frozen=True)
class MemcachedClientConfig:
    """Client settings; ``asdict(config)`` is valid keyword arguments of a pymemcache client.

    Frozen and hashable like the original. ``serde`` does not take part in equality or the
    hash: pymemcache's ``PickleSerde`` has neither, and ``asdict()`` deep-copies it.
    """

    server: tuple[str, int] = ("localhost", 11211)
    connect_timeout: float = 1.0
    timeout: float = 0.1
    no_delay: bool = True
    serde: Any = field(
        default_factory=lambda: PickleSerde(pickle_version=PICKLE_VERSION), compare=False
    )


def _fields_of(client_config: Any) -> dict[str, Any]:
    """The client fields of any config-like object: ours, pyDVL's, a dataclass, a mapping,
    or an object with the attributes."""
    if isinstance(client_config, Mapping):
        unknown = sorted(set(client_config) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                param="client_config",
                value=dict(client_config),
                expected=f"known keys only; unknown: {unknown}; accepted: {list(_FIELDS)}",
            )
        return dict(client_config)
    if dataclasses.is_dataclass(client_config) and not isinstance(client_config, type):
        names = {f.name for f in dataclasses.fields(client_config)}
        return {n: getattr(client_config, n) for n in _FIELDS if n in names}
    found = {n: getattr(client_config, n) for n in _FIELDS if hasattr(client_config, n)}
    if not found:
        raise ConfigError(
            param="client_config",
            value=client_config,
            expected=f"None, a mapping or an object with some of the fields {list(_FIELDS)}",
        )
    return found


def _client_config(client_config: Any) -> MemcachedClientConfig:
    if client_config is None:
        return MemcachedClientConfig()
    values = _fields_of(client_config)
    server = values.get("server")
    if isinstance(server, list):
        values["server"] = tuple(server)
    if values.get("serde", ...) is None:
        values.pop("serde")
    return MemcachedClientConfig(**values)


def _codec(serde: Any) -> Any:
    """A user's serde as the payload codec; pymemcache's pickle serde means our default."""
    if serde is None or type(serde) is PickleSerde:
        return None
    if not (callable(getattr(serde, "serialize", None)) and callable(
        getattr(serde, "deserialize", None)
    )):
        raise ConfigError(
            param="client_config.serde",
            value=serde,
            expected="a pymemcache serde (serialize(key, value) and deserialize(key, data, "
            "flags))",
        )
    return serde


def memcached(
    client_config: Any = None,
    time_threshold: float = 0.3,
    allow_repeated_evaluations: bool = False,
    rtol_stderr: float = 0.1,
    min_repetitions: int = 3,
    ignore_args: Iterable[str] | str | None = None,
    *,
    pickle_args: bool | Literal["warn"] = "warn",
    **options: Any,
) -> Callable[..., Memoized[..., Any]]:
    """Seed-compatible decorator factory: ``memcached(...)(fun, signature=None)``.

    The returned object is a ``Memoized`` named ``memcached_<fun name>`` with the effective
    client configuration in ``.config``. With ``allow_repeated_evaluations`` each call folds a
    new evaluation into the running mean until ``min_repetitions`` values are in and the
    standard error is at most ``rtol_stderr * |mean|``; the current mean is returned.
    ``options`` are further ``Memoized`` options (``namespace``, ``signing_key``, ...).
    """
    config = _client_config(client_config)
    codec = _codec(config.serde)
    policy = (
        RepetitionPolicy(min_repetitions=min_repetitions, rtol_stderr=rtol_stderr)
        if allow_repeated_evaluations
        else None
    )
    def backend() -> MemcachedBackend:
        return MemcachedBackend(
            [config.server],
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
            no_delay=config.no_delay,
        )

    backend()  # validate at decoration time: a bad server or timeout is a ConfigError now

    def wrapper(fun: Callable[..., R], signature: bytes | None = None) -> Memoized[..., R]:
        name = getattr(fun, "__name__", type(fun).__name__)
        wrapped: Memoized[..., R] = Memoized(
            fun,
            backend(),
            time_threshold=time_threshold,
            repeat=policy,
            ignore_args=ignore_args or (),
            signature=signature,
            name=f"memcached_{name}",
            pickle_args=pickle_args,
            codec=codec,
            **options,
        )
        wrapped.__doc__ = (
            f"A wrapper around {name}() with remote caching enabled.\n"
            + (getattr(fun, "__doc__", None) or "")
        )
        wrapped.config = config
        return wrapped

    return wrapper
