"""What a cache holds, per namespace and function, read from entry headers only.

``expcache cache ls`` and ``cache clear --function`` are built on this. Entries are found by
enumerating the backend's keys (memcached: ``lru_crawler metadump`` on every node; disk:
the index) and reading their envelopes' metadata — verified (digest or HMAC) but never
unpickled, so listing a shared store runs no code from it. Entries that cannot be verified
(another signing key, garbage) are counted as ``unverified`` under their key's tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .backends.base import Backend
from .errors import SerdeError
from .explain import MANIFEST_SUFFIX
from .keys import KEY_FORMAT_VERSION, key_prefix, parse_key
from .serde import Serde

__all__ = [
    "FunctionSummary",
    "entry_keys",
    "is_manifest",
    "list_functions",
    "scan",
    "scoped_prefix",
]

BATCH: Final = 200


@dataclass
class FunctionSummary:
    """One function's entries in one namespace (``cache ls`` prints one row of these)."""

    namespace: str
    function: str
    tag: str
    key_format: int
    entries: int = 0
    values: int = 0
    moments: int = 0
    unverified: int = 0
    bytes: int = 0
    oldest: float | None = None
    newest: float | None = None
    compute_seconds: float = 0.0  # what one hit of every entry saves
    labels: set[str] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("labels")
        return out


def scoped_prefix(namespace: str | None, function: str | None = None) -> str:
    """The key prefix of a namespace (``None``: every namespace is not a prefix: ``""``)."""
    if namespace is None:
        if function is not None:
            raise ValueError("a function is cleared within a namespace")
        return ""
    return key_prefix(namespace, function)


def is_manifest(key: str) -> bool:
    return key.endswith(":" + MANIFEST_SUFFIX)


def entry_keys(backend: Backend, prefix: str = "", *, manifests: bool = False) -> Iterator[str]:
    """Keys of entries (and, if asked, manifests) under ``prefix``: not leases or chunks."""
    for key in backend.iter_keys(prefix):
        if is_manifest(key):
            if manifests:
                yield key
            continue
        parts = parse_key(key)
        if parts is not None and not parts.suffix:
            yield key


def scan(
    backend: Backend,
    prefix: str = "",
    *,
    progress: Callable[[int], None] | None = None,
    manifests: bool = False,
) -> Iterator[tuple[str, bytes]]:
    """``(key, raw envelope)`` of every entry under ``prefix``, read in batches."""
    batch: list[str] = []
    for key in entry_keys(backend, prefix, manifests=manifests):
        batch.append(key)
        if len(batch) >= BATCH:
            yield from _read(backend, batch, progress)
            batch = []
    if batch:
        yield from _read(backend, batch, progress)


def _read(
    backend: Backend, keys: list[str], progress: Callable[[int], None] | None
) -> Iterator[tuple[str, bytes]]:
    found = backend.get_many(keys)
    if progress is not None:
        progress(len(keys))
    for key in keys:
        data = found.get(key)
        if data is not None:  # evicted or deleted between listing and reading
            yield key, bytes(data)


def list_functions(
    backend: Backend, serde: Serde, namespace: str | None = None
) -> list[FunctionSummary]:
    """Per (namespace, function): entries, bytes, oldest/newest, compute seconds saved."""
    rows: dict[tuple[str, str, int], FunctionSummary] = {}
    for key, data in scan(backend, scoped_prefix(namespace)):
        parts = parse_key(key)
        assert parts is not None
        row = rows.get((parts.namespace, parts.tag, parts.version))
        if row is None:
            row = rows[(parts.namespace, parts.tag, parts.version)] = FunctionSummary(
                parts.namespace, "?", parts.tag, parts.version
            )
        row.entries += 1
        row.bytes += len(data)
        try:
            kind, meta, _ = serde.read_meta(key, data)
        except SerdeError:
            row.unverified += 1
            continue
        if kind == "moments":
            row.moments += 1
        else:
            row.values += 1
        row.labels.add(meta.function)
        row.compute_seconds += meta.seconds
        if meta.created:
            row.oldest = meta.created if row.oldest is None else min(row.oldest, meta.created)
            row.newest = meta.created if row.newest is None else max(row.newest, meta.created)
    for row in rows.values():
        row.function = ", ".join(sorted(row.labels)) or "?"
    return sorted(rows.values(), key=lambda r: (r.namespace, r.function, r.key_format))


def current_format(row: FunctionSummary) -> bool:
    return row.key_format == KEY_FORMAT_VERSION
