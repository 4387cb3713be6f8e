"""The one exception hierarchy of expcache, split by who is to blame.

::

    ExpcacheError                      anything raised by expcache itself
    ├── ConfigError (ValueError)       the user's configuration is wrong: fix the YAML/arguments
    ├── KeyEncodingError (TypeError)   an argument cannot be turned into a deterministic key
    ├── BackendError                   the cache store failed; the memoizer computes instead
    │   ├── BackendUnavailable         cannot connect / connection lost
    │   ├── BackendTimeout             the server did not answer in time (hung, overloaded)
    │   ├── ValueTooLarge              the store refused a value for its size
    │   └── StoreRefused               the store is alive but kept nothing (full, with -M)
    └── SerdeError                     a stored entry is corrupt, foreign or of another version
        └── SignatureError             the entry's HMAC is missing or wrong (possibly forged)

Errors of pymemcache, diskcache and sockets are mapped onto these at the backend boundary
(``raise ... from exc``), so callers never need to import a dependency to catch them. The
memoizer never lets a ``BackendError`` or ``SerdeError`` escape a call: it counts it and runs
the function instead.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "ExpcacheError",
    "KeyEncodingError",
    "SerdeError",
    "SignatureError",
    "StoreRefused",
    "ValueTooLarge",
]


class ExpcacheError(Exception):
    """Root of every exception expcache raises on purpose."""


class ConfigError(ExpcacheError, ValueError):
    """A configuration value is wrong; the message names the key and what is accepted."""


class KeyEncodingError(ExpcacheError, TypeError):
    """An argument has no deterministic encoding; the message names the parameter."""


class BackendError(ExpcacheError):
    """A cache store operation failed. Always recoverable: the value can be computed."""


class BackendUnavailable(BackendError):
    """The store cannot be reached (refused, reset, closed, not resolvable)."""


class BackendTimeout(BackendError):
    """The store did not answer within the configured timeout."""


class ValueTooLarge(BackendError):
    """The store refused a value because of its size."""


class StoreRefused(BackendError):
    """The store answered but declined to keep a value (full without eviction, not stored).

    Unlike a timeout or a lost connection this says the server is alive: the memoizer counts it
    as an error but does not let it trip the circuit breaker, so reads keep hitting.
    """


class SerdeError(ExpcacheError):
    """A stored entry could not be decoded into a trustworthy value."""


class SignatureError(SerdeError):
    """A stored entry has no valid HMAC: it was not written by a holder of the signing key."""
