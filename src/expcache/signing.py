"""The signing key: one rule for the constructor argument, YAML and the environment.

An empty value means "no signing" wherever it comes from (an unset ``${oc.env:...}`` in YAML
resolves to ""), so the Python API, the CLI and the variable agree; a key too short to resist
guessing is refused with the name of where it came from and how to make a good one.
"""

from __future__ import annotations

import os
from typing import Any, Final

from .errors import ConfigError

__all__ = ["ENV_SIGNING_KEY", "MIN_KEY_BYTES", "checked_signing_key", "signing_key_from_env"]

ENV_SIGNING_KEY: Final = "EXPCACHE_SIGNING_KEY"
MIN_KEY_BYTES: Final = 16
_KEY_HINT: Final = "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"


def signing_key_from_env() -> bytes | None:
    """The signing key from ``EXPCACHE_SIGNING_KEY``, if set and not empty."""
    return checked_signing_key(ENV_SIGNING_KEY, os.environ.get(ENV_SIGNING_KEY))


def checked_signing_key(param: str, value: Any) -> bytes | None:
    """``None`` for no key ("" too: an unset ``${oc.env:...}`` in YAML), else >= 16 bytes."""
    key = value.encode() if isinstance(value, str) else value
    if key is not None and not isinstance(key, bytes):
        raise ConfigError(param=param, value=value, secret=True,
                          expected=f"bytes or str of at least {MIN_KEY_BYTES} bytes, or null")
    if key and len(key) < MIN_KEY_BYTES:
        raise ConfigError(param=param, value=value, expected=f"at least {MIN_KEY_BYTES} bytes",
                          hint=_KEY_HINT, secret=True)
    return key or None
