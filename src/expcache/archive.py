"""Portable archives of a namespace's entries: memcached to a file and back, one machine's
disk cache into another's.

Keys are the same on every machine, so an entry is portable as it is: the archive holds the
raw verified envelopes (values and running moments, plus the identity manifests ``explain``
reads) under their keys, and any backend can import them. Layout::

    b"XCARCHIV" | u16 format | u32 n | header JSON (n bytes)
    records:  b"R" | u16 key length | key | u64 data length | data | xxh3-128(key + data)
    trailer:  b"E" | u64 record count | xxh3-128 of every byte before the trailer

Export writes only entries that verify with the exporting cache's serde (digest, or HMAC
with its signing key): a shared store also holds colleagues' entries signed with other keys,
garbage, or entries of another format, and one such record would stop every import of the
archive at it. They are counted in ``ExportReport.skipped`` instead.

Import verifies before it writes: each record's own digest, then its envelope (its digest,
or its HMAC with this cache's signing key) — an entry that does not verify is never written,
so an import can stop early but never writes a partial or wrong entry. A header of another
format, an archive signed for another key (its first entry fails the HMAC), or a corrupt or
truncated stream raise ``ArchiveError`` saying which, after importing only what verified.
Existing entries are kept unless ``replace=True`` (importing twice adds nothing; a running
mean is never merged with itself).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import xxhash

from .backends.base import Backend
from .errors import ExpcacheError, SerdeError, SignatureError, StoreRefused, ValueTooLarge
from .inventory import scan, scoped_prefix
from .keys import KEY_FORMAT_VERSION
from .serde import FORMAT_VERSION, Serde

__all__ = ["ArchiveError", "ExportReport", "ImportReport", "export_archive", "import_archive"]

MAGIC: Final = b"XCARCHIV"
FORMAT: Final = 1
_HEAD: Final = struct.Struct("!8sHI")
_REC: Final = struct.Struct("!cH")
_LEN: Final = struct.Struct("!Q")
_END: Final = struct.Struct("!cQ")
_DIGEST: Final = 16
_MAX_KEY: Final = 1024
_MAX_DATA: Final = 1 << 34  # 16 GiB: a length beyond this is corruption, not data


class ArchiveError(ExpcacheError):
    """The archive cannot be (fully) imported; the message says why and what was kept."""


@dataclass
class ExportReport:
    path: str
    namespace: str | None
    entries: int = 0
    manifests: int = 0
    bytes: int = 0
    skipped: int = 0  # entries that do not verify with this serde: not exported


@dataclass
class ImportReport:
    path: str
    imported: int = 0
    kept: int = 0  # already present, left as they were (replace=False)
    refused: int = 0  # the backend refused to store (full, too large)
    header: dict[str, Any] = field(default_factory=dict)


def export_archive(
    backend: Backend,
    serde: Serde,
    path: str | os.PathLike[str],
    namespace: str | None,
    *,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write every entry of ``namespace`` (``None``: all namespaces) to ``path``.

    Written to a temporary file and renamed: a failed export never leaves a file that looks
    complete.
    """
    target = Path(path)
    report = ExportReport(str(target), namespace)
    header = {
        "format": FORMAT,
        "key_format": KEY_FORMAT_VERSION,
        "envelope_format": FORMAT_VERSION,
        "namespace": namespace,
        "signed": serde.signed,
        "created": time.time(),
        "host": socket.gethostname(),
        "source": backend.describe(),
    }
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = xxhash.xxh3_128()
    count = 0
    try:
        with open(tmp, "wb") as fh:
            _write(fh, digest, _head(header))
            for key, data in scan(backend, scoped_prefix(namespace), progress=progress,
                                  manifests=True):
                try:
                    serde.verify(key, data)
                except SerdeError:
                    report.skipped += 1
                    continue
                raw = key.encode()
                _write(fh, digest, _REC.pack(b"R", len(raw)) + raw + _LEN.pack(len(data)))
                _write(fh, digest, data)
                _write(fh, digest, xxhash.xxh3_128_digest(raw + data))
                count += 1
                report.bytes += len(data)
                if key.endswith(":manifest"):
                    report.manifests += 1
                else:
                    report.entries += 1
            fh.write(_END.pack(b"E", count) + digest.digest())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return report


def _head(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, sort_keys=True, default=str).encode()
    return _HEAD.pack(MAGIC, FORMAT, len(body)) + body


def _write(fh: IO[bytes], digest: Any, data: bytes) -> None:
    fh.write(data)
    digest.update(data)


def read_header(fh: IO[bytes]) -> dict[str, Any]:
    head = fh.read(_HEAD.size)
    if len(head) < _HEAD.size or head[:8] != MAGIC:
        raise ArchiveError("not an expcache archive (bad magic bytes)")
    _, fmt, size = _HEAD.unpack(head)
    if fmt != FORMAT:
        raise ArchiveError(f"archive format {fmt}; this expcache reads format {FORMAT}")
    body = fh.read(size)
    if len(body) < size:
        raise ArchiveError("archive truncated inside its header")
    try:
        header = json.loads(body)
    except ValueError as exc:
        raise ArchiveError(f"archive header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArchiveError("archive header is not a JSON object")
    return header


def _records(fh: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """Verified ``(key, envelope)`` records; ArchiveError at the first inconsistency."""
    digest = xxhash.xxh3_128()
    fh.seek(0)
    size = _HEAD.size + _HEAD.unpack(fh.read(_HEAD.size))[2]
    fh.seek(0)
    digest.update(fh.read(size))
    index = 0
    while True:
        tag = fh.read(1)
        if not tag:
            raise ArchiveError(f"archive truncated after {index} records (no end marker)")
        if tag == b"E":
            rest = fh.read(_END.size - 1 + _DIGEST)
            if len(rest) < _END.size - 1 + _DIGEST:
                raise ArchiveError(f"archive truncated in its end marker after {index} records")
            (count,) = _LEN.unpack(rest[:8])
            if count != index or rest[8:] != digest.digest():
                raise ArchiveError("archive end marker does not match its records (corrupt)")
            if fh.read(1):
                raise ArchiveError("archive has data after its end marker (corrupt)")
            return
        if tag != b"R":
            raise ArchiveError(f"archive record {index} is corrupt (bad record tag)")
        head = fh.read(2)
        if len(head) < 2:
            raise ArchiveError(f"archive truncated in record {index}")
        (klen,) = struct.unpack("!H", head)
        raw = fh.read(klen)
        length = fh.read(8)
        if len(raw) < klen or len(length) < 8 or klen > _MAX_KEY:
            raise ArchiveError(f"archive truncated or corrupt in record {index}")
        (dlen,) = _LEN.unpack(length)
        if dlen > _MAX_DATA:
            raise ArchiveError(f"archive record {index} declares {dlen} bytes (corrupt)")
        data = fh.read(dlen)
        check = fh.read(_DIGEST)
        if len(data) < dlen or len(check) < _DIGEST:
            raise ArchiveError(f"archive truncated in record {index}")
        if xxhash.xxh3_128_digest(raw + data) != check:
            raise ArchiveError(f"archive record {index} is corrupt (digest mismatch)")
        for part in (tag, head, raw, length, data, check):
            digest.update(part)
        try:
            key = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ArchiveError(f"archive record {index} has a non-ASCII key (corrupt)") from None
        index += 1
        yield key, data


def import_archive(
    backend: Backend,
    serde: Serde,
    path: str | os.PathLike[str],
    *,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Store every verified entry of the archive at ``path`` in ``backend``."""
    report = ImportReport(str(path))
    with open(path, "rb") as fh:
        report.header = read_header(fh)
        if report.header.get("signed") and not serde.signed:
            raise ArchiveError(
                "the archive's entries are signed; set the signing key they were written "
                "with (EXPCACHE_SIGNING_KEY or cache.signing_key) to import them"
            )
        try:
            for key, data in _records(fh):
                try:
                    serde.verify(key, data)
                except SignatureError as exc:
                    raise ArchiveError(
                        f"entry {key} does not verify with this cache's signing key ({exc}); "
                        "the archive was signed with another key (or not signed)"
                    ) from None
                except SerdeError as exc:
                    raise ArchiveError(f"entry {key} is not a valid expcache entry: {exc}") from None
                try:
                    if not replace and backend.get(key) is not None:
                        report.kept += 1
                    else:
                        backend.set(key, data)  # chunked by the backend when large
                        report.imported += 1
                except (StoreRefused, ValueTooLarge):
                    report.refused += 1
                if progress is not None:
                    progress(1)
        except ArchiveError as exc:
            raise ArchiveError(
                f"{path}: {exc}; imported {report.imported} verified entries before it"
            ) from None
    return report
