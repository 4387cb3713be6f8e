"""Cache keys: function identity + canonical argument encoding -> a memcached-safe string.

PLACEHOLDER: minimal implementation with the final interface; the full canonical encoder
(issue 2) replaces the internals.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["KEY_FORMAT_VERSION", "KeyMaker", "fingerprint", "function_identity"]

KEY_FORMAT_VERSION = 1
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{0,64}$")


def fingerprint(obj: Any, *, name: str = "value", pickle_fallback: bool = False) -> bytes:
    """16-byte digest of the canonical encoding of ``obj``."""
    return hashlib.blake2b(pickle.dumps(obj, protocol=4), digest_size=16).digest()


def function_identity(fn: Callable[..., Any]) -> bytes:
    """16-byte digest of what makes ``fn`` compute what it computes."""
    code = getattr(fn, "__code__", None)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    if code is not None:
        h.update(code.co_code)
    return h.digest()


class KeyMaker:
    """Turns one call's ``(args, kwargs)`` into a key; prepared once per function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        ignore_args: Iterable[str] = (),
        signature: bytes | None = None,
        version: str | None = None,
        namespace: str = "",
        pickle_fallback: bool = False,
    ) -> None:
        if not _NAMESPACE_RE.match(namespace):
            raise ConfigError(
                f"namespace={namespace!r}: use at most 64 characters from [A-Za-z0-9_.-]"
            )
        self.fn = fn
        self.ignore_args = frozenset(ignore_args)
        self.signature = signature
        self.version = version
        self.namespace = namespace
        self.pickle_fallback = pickle_fallback
        self._sig = inspect.signature(fn)
        ident = signature if signature is not None else function_identity(fn)
        if version is not None:
            ident = ident + b"|v=" + version.encode()
        self.identity: bytes = ident
        self._prefix = f"{namespace}:" if namespace else ""

    def digest(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        items = sorted((k, v) for k, v in bound.arguments.items() if k not in self.ignore_args)
        h = hashlib.blake2b(digest_size=16)
        h.update(self.identity)
        h.update(pickle.dumps(items, protocol=4))
        return h.digest()

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        return f"{self._prefix}ex{KEY_FORMAT_VERSION}:{self.digest(args, kwargs).hex()}"
