"""The key string and the compact per-argument digests stored beside entries.

A key is ``[<namespace>:]ex<KEY_FORMAT_VERSION>:<tag>:<digest>``: the namespace keeps
projects apart on a shared server, the version keeps other encodings from ever being read as
this one, the tag (first 6 bytes of xxh3-64 of the function's label) lets one function's
entries be enumerated and cleared by prefix, and the digest (xxh3-128 of the function's
identity and the bound arguments) is the call. Everything is ASCII without whitespace, well
under memcached's 250 bytes. Keys with more parts (``<key>:lease``, ``<key>:c<i>:<nonce>``,
``[<ns>:]ex3:<tag>:manifest``) are auxiliary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import xxhash

from .. import _validate

__all__ = [
    "ARGS_LIMIT",
    "ARGS_TRUNCATED",
    "KEY_FORMAT_VERSION",
    "KeyParts",
    "key_prefix",
    "label_tag",
    "pack_argument_digests",
    "parse_key",
    "unpack_argument_digests",
]

# 1: pickle-based placeholder; 2: canonical encoding; 3: function tag in the key, OrderedDict
# order, class content, numpy random objects, sorted-int sets/str-key dicts (see tags.py).
KEY_FORMAT_VERSION = 3
NAMESPACE_PATTERN = r"[A-Za-z0-9_.\-]{0,64}"
_NAMESPACE_TEXT = "at most 64 characters from [A-Za-z0-9_.-]"
_KEY = re.compile(
    r"(?:(?P<ns>[A-Za-z0-9_.\-]{1,64}):)?ex(?P<version>[0-9]{1,4}):(?P<rest>[^\s]*)", re.ASCII
)
_TAG = re.compile(r"[0-9a-f]{12}")
_DIGEST = re.compile(r"[0-9a-f]{32}")


def check_namespace(namespace: object) -> str:
    return str(
        _validate.text("namespace", namespace, pattern=NAMESPACE_PATTERN, describe=_NAMESPACE_TEXT)
    )


def label_tag(label: str) -> str:
    """12 lowercase hex: the first 6 bytes of xxh3-64 of the label (UTF-8)."""
    return xxhash.xxh3_64_digest(label.encode("utf-8", "surrogatepass"))[:6].hex()


def key_prefix(namespace: str = "", label: str | None = None) -> str:
    """``"[ns:]ex3:"`` (every key of a namespace) or ``"[ns:]ex3:<tag>:"`` (one function's)."""
    namespace = check_namespace(namespace)
    head = f"{namespace}:ex{KEY_FORMAT_VERSION}:" if namespace else f"ex{KEY_FORMAT_VERSION}:"
    if label is None:
        return head
    label = _validate.text("label", label, pattern=r".+", describe="a non-empty string")
    return f"{head}{label_tag(label)}:"


class KeyParts(NamedTuple):
    """A parsed key. ``tag`` is "" for keys of format 2 (they had none); ``digest`` is ""
    for a function's manifest (``suffix == "manifest"``); ``suffix`` is "" for an entry."""

    namespace: str
    version: int
    tag: str
    digest: str
    suffix: str

    @property
    def auxiliary(self) -> bool:
        """Not an entry: a lease, a chunk, a manifest."""
        return bool(self.suffix)


def parse_key(key: str) -> KeyParts | None:
    """The parts of an expcache key, or None for anything else (never raises)."""
    m = _KEY.fullmatch(key)
    if m is None:
        return None
    namespace, version = m["ns"] or "", int(m["version"])
    fields = m["rest"].split(":", 2 if version >= 3 else 1)
    tag = ""
    if version >= 3:
        if len(fields) < 2 or not _TAG.fullmatch(fields[0]):
            return None
        tag = fields.pop(0)
        if fields == ["manifest"]:
            return KeyParts(namespace, version, tag, "", "manifest")
    if not _DIGEST.fullmatch(fields[0]):
        return None
    suffix = fields[1] if len(fields) > 1 else ""
    if len(fields) > 1 and not suffix:
        return None
    return KeyParts(namespace, version, tag, fields[0], suffix)


# ---------------------------------------------------------------- argument digests
ARGS_LIMIT = 4096  # Meta.args budget
ARGS_TRUNCATED = "..."  # key of the marker entry unpack adds when entries were left out
_ARGS_FORMAT = 1
_NAME_LIMIT = 64


def _clip(name: str) -> bytes:
    b = name.encode("utf-8", "surrogatepass")
    if len(b) <= _NAME_LIMIT:
        return b
    return b[:_NAME_LIMIT].decode("utf-8", "ignore").encode("utf-8")


def pack_argument_digests(digests: Mapping[str, bytes]) -> bytes:
    """``{name: 8-byte digest}`` -> at most ``ARGS_LIMIT`` bytes, in the mapping's order.

    Layout: format byte, flags byte (1 = truncated), then per entry a name length byte, the
    name (UTF-8, cut to 64 bytes on a character boundary) and the digest. Entries that do not
    fit are left out whole and the flag is set: a report can say "and more".
    """
    out = bytearray([_ARGS_FORMAT, 0])
    for name, value in digests.items():
        if len(value) != 8:
            raise ValueError(f"argument digest of {name!r}: expected 8 bytes, got {len(value)}")
        clipped = _clip(name)
        if len(out) + 1 + len(clipped) + 8 > ARGS_LIMIT:
            out[1] |= 1
            break
        out += bytes([len(clipped)]) + clipped + value
    return bytes(out)


def unpack_argument_digests(data: bytes | bytearray | memoryview) -> dict[str, bytes]:
    """The inverse of ``pack_argument_digests``; ``{}`` for empty data (entries written
    without digests). A truncated pack gets a last entry ``ARGS_TRUNCATED: b""``. Raises
    ``ValueError`` for bytes that are not such a pack."""
    b = bytes(data)
    if not b:
        return {}
    if len(b) < 2 or b[0] != _ARGS_FORMAT or b[1] & ~1:
        raise ValueError("argument digests: unknown format")
    result: dict[str, bytes] = {}
    i = 2
    while i < len(b):
        n = b[i]
        end = i + 1 + n + 8
        if end > len(b):
            raise ValueError("argument digests: truncated entry")
        try:
            name = b[i + 1 : i + 1 + n].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise ValueError("argument digests: a name is not UTF-8") from None
        result[name] = b[i + 1 + n : end]
        i = end
    if b[1] & 1:
        result[ARGS_TRUNCATED] = b""
    return result
