"""Structured-config schemas of the ``cache``, ``policy`` and ``task`` groups.

Each YAML option starts with ``defaults: [/<schema name>@_here_, _self_]``: composing it
through its dataclass makes Hydra reject unknown keys and wrong types on the command line and
in YAML, before any code runs. Ranges are not Hydra's business: they are checked by the core's
own constructors (``MemcachedBackend``, ``Memoized``, ``RepetitionPolicy``, ...) when
``build.validate`` dry-builds the objects, so there is one rule per value, in the core.

The schemas are stored at the top level of the ConfigStore (not inside the groups) so that
``expcache --help`` lists only real options. Field names follow the seed/pymemcache names.
``_target_`` names what ``hydra.utils.instantiate`` builds: a backend for ``cache`` (minus the
``CONTEXT_KEYS``, which configure the memoizer rather than the store) and a partial memoizer
factory for ``policy``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

__all__ = [
    "CACHE_SCHEMAS",
    "CONTEXT_KEYS",
    "EXTRA_SCHEMA_MODULES",
    "POLICY_SCHEMAS",
    "TASK_SCHEMAS",
    "DemoTaskConf",
    "DeterministicPolicyConf",
    "DiskCacheConf",
    "MemcachedCacheConf",
    "MemoryCacheConf",
    "NoneCacheConf",
    "StochasticPolicyConf",
    "register_schemas",
    "schema_name",
]

# Keys of a ``cache`` option that configure the memoizer / the run, not the backend object.
CONTEXT_KEYS = frozenset({"namespace", "signing_key", "strict"})


@dataclass
class _CacheBase:
    _target_: str = MISSING
    # Prefix of every key: separates projects/experiments sharing one store.
    namespace: str = ""
    # HMAC key for entries (>= 16 bytes); null = none. The YAML reads $EXPCACHE_SIGNING_KEY.
    signing_key: str | None = None
    # Fail at start when the store is unreachable, instead of warning and running uncached.
    strict: bool = False


@dataclass
class MemcachedCacheConf(_CacheBase):
    _target_: str = "expcache.backends.MemcachedBackend"
    # One "host:port" is a single server; several make a cluster (keys spread by hashing).
    servers: list[str] = field(default_factory=lambda: ["127.0.0.1:11211"])
    connect_timeout: float = 1.0
    timeout: float = 0.5
    no_delay: bool = True
    # Must match the servers' -I (item size limit); larger values are chunked.
    item_size: int = 2**20
    max_value_size: int = 64 * 2**20
    # Seconds a failed cluster node stays out of the ring before it is retried.
    dead_timeout: float = 30.0
    breaker_threshold: int = 3
    breaker_cooldown: float = 5.0


@dataclass
class DiskCacheConf(_CacheBase):
    _target_: str = "expcache.config.build.disk_backend"
    # null = the per-user cache directory ($EXPCACHE_DIR, else $XDG_CACHE_HOME/expcache).
    dir: str | None = None
    size_limit: int = 4 * 2**30
    timeout: float = 60.0
    max_value_size: int = 2**30
    breaker_threshold: int = 3
    breaker_cooldown: float = 5.0


@dataclass
class MemoryCacheConf(_CacheBase):
    _target_: str = "expcache.backends.MemoryBackend"
    max_items: int | None = 100_000


@dataclass
class NoneCacheConf(_CacheBase):
    _target_: str = "expcache.backends.NullBackend"


@dataclass
class _PolicyBase:
    _target_: str = MISSING
    _partial_: bool = True
    _convert_: str = "all"
    # Keyword arguments left out of the key (e.g. job ids, progress bars).
    ignore_args: list[str] = field(default_factory=list)
    # Entry lifetime in seconds; 0 = never expires.
    expire: float = 0.0
    # Allow pickling arguments that have no canonical encoding (slower, less portable).
    pickle_args: bool = False


@dataclass
class DeterministicPolicyConf(_PolicyBase):
    _target_: str = "expcache.Memoized"
    # Seconds; results computed faster are not stored. "auto": store when the computation took
    # clearly longer than a lookup of the configured backend.
    time_threshold: Any = "auto"
    # One computation per cold key across workers (stampede protection on shared stores).
    lease: bool = True
    lease_ttl: float = 10.0
    lease_max_wait: float = 600.0


@dataclass
class StochasticPolicyConf(_PolicyBase):
    _target_: str = "expcache.config.build.stochastic_memoizer"
    # Re-evaluate until n >= min_repetitions and stderr <= max(rtol_stderr*|mean|, atol_stderr),
    # or until n >= max_repetitions (null: no cap).
    min_repetitions: int = 3
    rtol_stderr: float = 0.1
    atol_stderr: float = 0.0
    max_repetitions: int | None = None
    max_cas_retries: int = 200


@dataclass
class DemoTaskConf:
    _target_: str = "expcache.tasks.demo.run_demo"
    n_points: int = 200
    n_features: int = 8
    subset_size: int = 12
    n_subsets: int = 20
    # Fraction of the subsets that every seed evaluates (the rest depend on the seed).
    shared_fraction: float = 0.5
    # Gradient steps per evaluation: the cost knob of the synthetic utility.
    n_iter: int = 1000
    # Standard deviation of the noise added to each evaluation (use with policy=stochastic).
    noise: float = 0.0
    data_seed: int = 0


CACHE_SCHEMAS: dict[str, type] = {
    "memcached": MemcachedCacheConf,
    "disk": DiskCacheConf,
    "memory": MemoryCacheConf,
    "none": NoneCacheConf,
}
POLICY_SCHEMAS: dict[str, type] = {
    "deterministic": DeterministicPolicyConf,
    "stochastic": StochasticPolicyConf,
}
TASK_SCHEMAS: dict[str, type] = {"demo": DemoTaskConf}


def schema_name(group: str, option: str) -> str:
    """The ConfigStore name an option's YAML extends: ``/<this>@_here_``."""
    return f"expcache_{group}_{option}_schema"


# Schema modules of optional tasks. They are registered here, with ours, so that every entry
# point that composes (the CLI, the Compose API in tests, joblib workers re-composing a sweep)
# sees them; each imports only Hydra and the core (never pyDVL) and exposes ``register()``.
EXTRA_SCHEMA_MODULES = ("expcache.integrations.schema",)


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent: a re-store replaces the node)."""
    cs = ConfigStore.instance()
    for group, schemas in (
        ("cache", CACHE_SCHEMAS),
        ("policy", POLICY_SCHEMAS),
        ("task", TASK_SCHEMAS),
    ):
        for option, node in schemas.items():
            cs.store(name=schema_name(group, option), node=node)
    for name in EXTRA_SCHEMA_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but something it imports does not
                raise
            continue
        module.register()
