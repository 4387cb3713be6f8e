"""expcache: a configuration-driven shared cache for expensive experiment functions.

The public API, exported once here. Backends live in ``expcache.backends``; the Hydra layer in
``expcache.config``; the pyDVL integration in ``expcache.integrations.pydvl`` (optional extra).
"""

from .backends import DiskBackend, MemcachedBackend, MemoryBackend, NullBackend
from .compat import MemcachedClientConfig, memcached
from .entries import Meta, MomentsEntry, ValueEntry
from .errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ExpcacheError,
    KeyEncodingError,
    SerdeError,
    SignatureError,
    StoreRefused,
    ValueTooLarge,
)
from .keys import KeyMaker, fingerprint, function_identity, register_encoder
from .memoize import Memoized, memoize
from .policy import Moments, RepetitionPolicy
from .stats import CacheStats

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheStats",
    "ConfigError",
    "DiskBackend",
    "ExpcacheError",
    "KeyEncodingError",
    "KeyMaker",
    "MemcachedBackend",
    "MemcachedClientConfig",
    "Memoized",
    "MemoryBackend",
    "Meta",
    "Moments",
    "MomentsEntry",
    "NullBackend",
    "RepetitionPolicy",
    "SerdeError",
    "SignatureError",
    "StoreRefused",
    "ValueEntry",
    "ValueTooLarge",
    "__version__",
    "fingerprint",
    "function_identity",
    "memcached",
    "memoize",
    "register_encoder",
]
