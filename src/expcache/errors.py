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

from typing import Any

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


_NO_VALUE: Any = object()


class ConfigError(ExpcacheError, ValueError):
    """A configuration value is wrong: which parameter, the value given, what is accepted.

    The parts are data (``param``, ``value``, ``expected``, ``hint``) so that a caller that
    knows where the parameter sits (the Hydra app: ``cache.timeout``) relocates the error
    with ``located("cache")`` instead of parsing its message. ``secret=True`` keeps the value
    out of the message (signing keys). A bare ``ConfigError("text")`` is a free-form message
    for errors that are about no single parameter.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        value: Any = _NO_VALUE,
        expected: str | None = None,
        hint: str | None = None,
        secret: bool = False,
    ) -> None:
        self.param = param
        self.value = value
        self.expected = expected
        self.hint = hint
        self.secret = secret
        self.detail = message
        super().__init__(self._format())

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE

    def _format(self) -> str:
        if self.param is None:
            text = self.detail or self.expected or "invalid configuration"
        else:
            shown = ""
            if self.has_value:
                shown = "=<redacted>" if self.secret else f"={self.value!r}"
            text = f"{self.param}{shown}: {self.expected or self.detail or 'invalid value'}"
            if self.detail and self.expected:
                text += f" ({self.detail})"
        if self.hint:
            text += f"; {self.hint}"
        return text

    def located(self, prefix: str) -> ConfigError:
        """The same error with ``param`` under ``prefix`` (``timeout`` -> ``cache.timeout``)."""
        if self.param is None:
            return ConfigError(f"{prefix}: {self}")
        return ConfigError(
            self.detail,
            param=f"{prefix}.{self.param}",
            value=self.value,
            expected=self.expected,
            hint=self.hint,
            secret=self.secret,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle through ``args``; keyword-only parts need their own reducer
        # (Hydra's joblib launcher ships a failed job's exception back to the parent).
        return (_rebuild_config_error, (self.detail, self.__getstate__()))

    def __getstate__(self) -> dict[str, Any]:
        state = {
            "param": self.param,
            "expected": self.expected,
            "hint": self.hint,
            "secret": self.secret,
        }
        if self.has_value:
            state["value"] = "<redacted>" if self.secret else self.value
        return state


def _rebuild_config_error(message: str | None, state: dict[str, Any]) -> ConfigError:
    return ConfigError(message, **state)


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
