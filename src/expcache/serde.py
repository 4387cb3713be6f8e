"""The value envelope: everything expcache stores goes through here.

Layout of a stored value::

    b"XC" | format (1 byte) | flags (1 byte) | key digest (16 bytes) | [HMAC-SHA256 (32)] | body

``body`` is a pickle (optionally zlib-compressed) of one entry tuple. The header is checked
*before* anything is unpickled:

- the magic and format byte reject garbage and entries of another format version;
- the key digest rejects a valid entry copied under another key;
- with a signing key, the HMAC over ``key | header | body`` rejects anything not written by a
  holder of the key -- this is what stops a writer with network access to memcached from
  making every worker unpickle an object of its choosing (arbitrary code execution).

Any rejection raises ``SerdeError``; the memoizer turns it into a counted miss.
"""

from __future__ import annotations

import hmac
import os
import pickle
import zlib
from typing import Any, Final

import xxhash

from .entries import MomentsEntry, ValueEntry
from .errors import ConfigError, SerdeError, SignatureError

__all__ = ["ENV_SIGNING_KEY", "FORMAT_VERSION", "Serde", "signing_key_from_env"]

MAGIC: Final = b"XC"
FORMAT_VERSION: Final = 2  # 2: xxh3-128 key digest (1 used blake2b)
ENV_SIGNING_KEY: Final = "EXPCACHE_SIGNING_KEY"
PICKLE_PROTOCOL: Final = 5
_FLAG_ZLIB: Final = 1
_FLAG_SIGNED: Final = 2
_DIGEST_SIZE: Final = 16
_MAC_SIZE: Final = 32
_HEADER: Final = len(MAGIC) + 2 + _DIGEST_SIZE
_MIN_KEY: Final = 16
_PLAIN: Final = MAGIC + bytes((FORMAT_VERSION, 0))  # unsigned, uncompressed


def signing_key_from_env() -> bytes | None:
    """The signing key from ``EXPCACHE_SIGNING_KEY``, if set and not empty."""
    value = os.environ.get(ENV_SIGNING_KEY)
    if not value:
        return None
    if len(value.encode()) < _MIN_KEY:
        raise ConfigError(
            f"{ENV_SIGNING_KEY}: the signing key must be at least {_MIN_KEY} bytes long; "
            "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return value.encode()


def _key_digest(key: str) -> bytes:
    # An integrity check against misfiled entries, not a security boundary (the HMAC is):
    # xxh3 costs a tenth of blake2b on the hit path.
    return xxhash.xxh3_128_digest(key.encode())


class Serde:
    """Encodes entries into envelopes and back, verifying before unpickling.

    ``compress_min`` is the body size from which zlib (level 1, fast) is tried; it is kept only
    when it saves at least an eighth, so incompressible data (random floats) costs one attempt.
    """

    def __init__(
        self, signing_key: bytes | str | None = None, *, compress_min: int = 64 * 1024
    ) -> None:
        if isinstance(signing_key, str):
            signing_key = signing_key.encode()
        if signing_key is not None and len(signing_key) < _MIN_KEY:
            raise ConfigError(
                f"signing_key: must be at least {_MIN_KEY} bytes long; generate one with "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        self.signing_key = signing_key
        self.compress_min = compress_min

    @property
    def signed(self) -> bool:
        return self.signing_key is not None

    def dumps(self, key: str, entry: Any) -> bytes:
        body = pickle.dumps(entry, protocol=PICKLE_PROTOCOL)
        flags = 0
        if len(body) >= self.compress_min:
            packed = zlib.compress(body, 1)
            if len(packed) <= len(body) - len(body) // 8:
                body, flags = packed, flags | _FLAG_ZLIB
        if self.signing_key is not None:
            flags |= _FLAG_SIGNED
            header = MAGIC + bytes((FORMAT_VERSION, flags)) + _key_digest(key)
            mac = hmac.new(self.signing_key, key.encode() + header + body, "sha256").digest()
            return header + mac + body
        return MAGIC + bytes((FORMAT_VERSION, flags)) + _key_digest(key) + body

    def loads(self, key: str, data: bytes) -> Any:
        entry = self._loads(key, data)
        if type(entry) is not ValueEntry and type(entry) is not MomentsEntry:
            raise SerdeError(f"entry under {key!r} has an unknown layout")
        return entry

    def _loads(self, key: str, data: bytes) -> Any:
        if (  # the hit path: unsigned and uncompressed, header checked, then unpickled
            self.signing_key is None
            and type(data) is bytes
            and data[:4] == _PLAIN
            and len(data) > _HEADER
        ):
            if data[4:_HEADER] != _key_digest(key):
                raise SerdeError(f"entry under {key!r} was written for another key")
            try:
                return pickle.loads(memoryview(data)[_HEADER:])
            except Exception as exc:  # any unpickling failure means a corrupt entry
                raise SerdeError(f"entry under {key!r} cannot be decoded: {exc!r}") from exc
        if not isinstance(data, (bytes, bytearray)) or len(data) < _HEADER or data[:2] != MAGIC:
            raise SerdeError(f"entry under {key!r} is not an expcache envelope")
        if data[2] != FORMAT_VERSION:
            raise SerdeError(
                f"entry under {key!r} has envelope format {data[2]}, expected {FORMAT_VERSION}"
            )
        flags = data[3]
        if data[4:_HEADER] != _key_digest(key):
            raise SerdeError(f"entry under {key!r} was written for another key")
        if flags & ~(_FLAG_ZLIB | _FLAG_SIGNED):
            raise SerdeError(f"entry under {key!r} has unknown flags {flags:#04x}")
        body_start = _HEADER
        if self.signing_key is not None:
            if not flags & _FLAG_SIGNED:
                raise SignatureError(f"entry under {key!r} is not signed; signing is required")
            body_start += _MAC_SIZE
            mac = data[_HEADER:body_start]
            expected = hmac.new(
                self.signing_key, key.encode() + data[:_HEADER] + data[body_start:], "sha256"
            ).digest()
            if not hmac.compare_digest(mac, expected):
                raise SignatureError(f"entry under {key!r} has an invalid signature")
        elif flags & _FLAG_SIGNED:
            raise SignatureError(
                f"entry under {key!r} is signed but no signing key is configured "
                f"(set {ENV_SIGNING_KEY} like the writer did)"
            )
        body = memoryview(data)[body_start:]
        try:
            if flags & _FLAG_ZLIB:
                body = memoryview(zlib.decompress(body))
            return pickle.loads(body)
        except Exception as exc:  # any unpickling failure means a corrupt entry
            raise SerdeError(f"entry under {key!r} cannot be decoded: {exc!r}") from exc
