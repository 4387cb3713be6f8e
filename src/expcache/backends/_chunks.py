"""Values larger than one memcached item: chunks under their own keys, behind a manifest.

A value above the chunk limit is written as chunks under ``<key>:c<i>:<nonce>`` followed by a
manifest under ``<key>`` carrying the chunk count, total size and an xxh3-128 digest of the
whole. The chunks go first, so a reader that finds the manifest finds chunks too unless they
were evicted since; a reader that finds any chunk missing or the digest wrong sees a miss,
never a partial or corrupt value. The per-write nonce keeps two concurrent writers' chunks
apart (each manifest names only its own).

Reading preallocates one ``bytearray`` of the manifest's total size (bounded by
``max_value_size``) and receives every chunk straight into its place; the digest is computed
once over the result. Each whole chunk moved extends the operation's deadline (see
``_deadline.Deadline.extend``).
"""

from __future__ import annotations

import os
import struct

import xxhash
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from ..errors import StoreRefused
from . import _bulk, _wire
from ._deadline import Deadline

__all__ = ["CHUNK_MAGIC", "MANIFEST", "assemble", "write"]

CHUNK_MAGIC = b"XCCHUNK1"
MANIFEST = struct.Struct("!IQ16s8s")  # chunk count, total size, xxh3-128 digest, nonce
_HEX = frozenset(b"0123456789abcdef")
_MIN_CHUNK = 1024  # item_size >= 2 KiB with 1 KiB kept for the item header: no smaller chunk


def write(
    client: Client | HashClient,
    deadline: Deadline,
    key: str,
    value: bytes,
    exptime: int,
    chunk_limit: int,
    where: str,
) -> bytes:
    """Store ``value``'s chunks; return the manifest to store under ``key`` after them."""
    nonce = os.urandom(4).hex()
    view = memoryview(value)
    chunks = [
        (f"{key}:c{i}:{nonce}", view[off : off + chunk_limit])
        for i, off in enumerate(range(0, len(value), chunk_limit))
    ]
    if type(client) is Client and all(_wire.token(name) for name, _ in chunks):
        refused = _bulk.store_many(client, chunks, exptime, deadline.extend)  # no copies
    else:  # a cluster: chunks spread over the nodes, one pymemcache request per chunk
        refused = 0
        for name, part in chunks:
            refused += len(client.set_many({name: bytes(part)}, expire=exptime, noreply=False))
            deadline.extend()
    if refused:
        raise StoreRefused(f"memcached {where}: {refused} chunks not stored")
    digest = xxhash.xxh3_128_digest(value)
    return CHUNK_MAGIC + MANIFEST.pack(len(chunks), len(value), digest, nonce.encode())


def assemble(
    client: Client | HashClient,
    deadline: Deadline,
    key: str,
    manifest: bytes | bytearray,
    max_value_size: int,
    read_limit: int,
) -> bytearray | None:
    """The value behind ``manifest`` in one buffer; None (a miss) unless every chunk is there
    and the digest over the whole matches."""
    try:
        count, total, digest, nonce = MANIFEST.unpack(manifest[8:])
    except struct.error:
        return None
    if not 0 < count <= 1 + total // _MIN_CHUNK or total > max_value_size:
        return None
    if not _HEX.issuperset(nonce):
        return None  # not a manifest we wrote: its chunk names would not even be keys
    names = [f"{key}:c{i}:{nonce.decode()}" for i in range(count)]
    out = bytearray(total)
    if type(client) is Client and all(_wire.token(n) for n in names):
        if not _bulk.get_chunks(client, names, out, read_limit, deadline.extend):
            return None
    else:
        offset = 0
        for name in names:  # one request per chunk: each whole chunk extends the deadline
            part = client.get_many([name]).get(name)
            if part is None or offset + len(part) > total:
                return None  # a chunk was evicted (or is not ours): a miss
            out[offset : offset + len(part)] = part
            offset += len(part)
            deadline.extend()
        if offset != total:
            return None
    if xxhash.xxh3_128_digest(out) != digest:
        return None
    return out
