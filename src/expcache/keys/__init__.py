"""Cache keys: function identity + canonical argument encoding -> a memcached-safe string.

``[namespace:]ex3:<tag>:<digest>`` (see ``format``): the digest is xxh3-128 of the function's
identity (``identity``: code, defaults, closures, globals, classes of the user's code by
content) and of the arguments bound to its signature (``bind``), each encoded canonically
(``encode``; every type tag byte is listed once in ``tags``). The same call gives the same key
in every process, on every machine, for every ``PYTHONHASHSEED``.

The hash is xxh3-128: keys are not a security boundary (stored entries are authenticated by
the serde HMAC), and hashing arrays of hundreds of MB at ~20-30 GB/s instead of blake2b's
~1 GB/s is what makes keying large numpy arguments cheap. 128 bits keep accidental collisions
negligible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import KeyEncodingError
from . import encode as _encode
from . import identity as _identity
from . import numeric as _numeric  # noqa: F401 - installs the numpy and pandas encoders
from .encode import Ctx, H, Unencodable
from .format import (
    ARGS_LIMIT,
    ARGS_TRUNCATED,
    KEY_FORMAT_VERSION,
    KeyParts,
    key_prefix,
    label_tag,
    pack_argument_digests,
    parse_key,
    unpack_argument_digests,
)
from .identity import parts_digest
from .maker import ARG_HINT, FN_HINT, KeyMaker, PickleArgs, default_label, describe_failure
from .objects import register_encoder

__all__ = [
    "ARGS_LIMIT",
    "ARGS_TRUNCATED",
    "KEY_FORMAT_VERSION",
    "KeyMaker",
    "KeyParts",
    "PickleArgs",
    "default_label",
    "fingerprint",
    "function_identity",
    "identity_from_manifest",
    "key_prefix",
    "label_tag",
    "pack_argument_digests",
    "parse_key",
    "register_encoder",
    "unpack_argument_digests",
]


def fingerprint(obj: Any, *, name: str = "value", pickle_args: bool = False) -> bytes:
    """16-byte digest of the canonical encoding of ``obj``; ``name`` only labels errors."""
    out: list[bytes] = []
    try:
        _encode.encode(obj, out, Ctx(bool(pickle_args)))
    except Unencodable as exc:
        raise describe_failure(exc, name, repr(name), ARG_HINT) from None
    except RecursionError:
        raise KeyEncodingError(
            f"cannot build a cache key for {name!r}: it is nested too deeply or contains "
            "itself (a reference cycle)"
        ) from None
    return H(b"".join(out))


def function_identity(fn: Callable[..., Any], *, pickle_args: bool = False) -> bytes:
    """16-byte digest of what makes ``fn`` compute what it computes (see ``identity``)."""
    what = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    try:
        return _identity.function_identity(fn, Ctx(bool(pickle_args)))
    except Unencodable as exc:
        raise describe_failure(exc, "fn", f"function {what}()", FN_HINT) from None
    except RecursionError:
        raise KeyEncodingError(f"function {what}(): nested too deeply; {FN_HINT}") from None


def identity_from_manifest(manifest: dict[str, bytes]) -> bytes:
    """The identity a manifest stands for: ``KeyMaker.identity == identity_from_manifest(
    KeyMaker.manifest())``; equal manifests <=> equal identities."""
    return parts_digest(dict(manifest))
