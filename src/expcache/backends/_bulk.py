"""Multi-item exchanges on pymemcache's connections: a large value's chunks received into
their place in one buffer, pipelined ``set`` of buffers sent as they are, pipelined
``delete``. They share ``_wire``'s reader and its rule that any failure closes the socket (a
half-read reply must never be read as the next command's); the single-key hit path stays in
``_wire``, where every microsecond is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from ._wire import BATCH, ProtocolError, Reader, connected, fail, token, value_head

__all__ = ["delete_many", "get_chunks", "store_many"]


def get_chunks(
    client: Client,
    names: Sequence[str],
    out: bytearray,
    limit: int,
    progress: Callable[[], None],
) -> bool:
    """Receive the chunks ``names`` (in order) straight into ``out``, one after the other.

    True when every chunk came back and they fill ``out`` exactly; False (a miss) when one is
    missing or of the wrong size. Replies come in request order, so each chunk's offset is the
    sum of the sizes before it; a reply that does not fit is read and dropped so the
    connection stays in step. ``progress`` runs after each whole chunk.
    """
    view = memoryview(out)
    total = len(out)
    offset = 0
    complete = True
    sock = connected(client)
    try:
        for i in range(0, len(names), BATCH):
            batch = [n.encode() for n in names[i : i + BATCH]]
            sock.sendall(b"get " + b" ".join(batch) + b"\r\n")
            reader = Reader(sock)
            expected = 0
            while (line := reader.line()) != b"END":
                name, size = value_head(line, limit)
                if name not in batch[expected:]:
                    raise ProtocolError(f"reply for {name[:64]!r}, which was not asked for")
                if name != batch[expected] or offset + size > total or not complete:
                    complete = False  # a chunk before this one is missing, or this one is wrong
                    reader.skip(size)
                else:
                    reader.read_into(view[offset : offset + size])
                    reader.crlf()
                    offset += size
                    progress()
                expected = batch.index(name) + 1
            if not reader.drained:
                raise ProtocolError("bytes after the end of the reply")
            if expected != len(batch):
                complete = False
            if not complete:
                return False  # in step after END: the rest need not be fetched
        return offset == total
    except BaseException:
        client.close()
        raise


def store_many(
    client: Client,
    items: Sequence[tuple[str, Any]],
    expire: int,
    progress: Callable[[], None],
) -> int:
    """``set`` each (key, buffer) pipelined, sending the buffers as they are (no copies).

    Returns how many were not stored; a ``SERVER_ERROR`` (full with ``-M``, too large) is
    raised as pymemcache raises it, for the backend to map.
    """
    sock = connected(client)
    try:
        sep = b""
        for key, data in items:
            sock.sendall(sep + b"set %s 0 %d %d\r\n" % (key.encode(), expire, len(data)))
            sock.sendall(data)
            sep = b"\r\n"
            progress()
        sock.sendall(sep)
        reader = Reader(sock)
        refused = 0
        for _ in items:
            line = reader.line()
            if line != b"STORED":
                if line != b"NOT_STORED":
                    raise fail(line)
                refused += 1
        if not reader.drained:
            raise ProtocolError("bytes after the end of the reply")
        return refused
    except BaseException:
        client.close()
        raise


def delete_many(client: Client, keys: Sequence[str], restart: Callable[[], None]) -> int:
    """Pipelined ``delete`` (a batch per round trip); returns how many keys were present."""
    raws = [token(k) for k in keys]
    if None in raws:
        bad = keys[raws.index(None)]
        raise MemcacheClientError(f"key {bad[:64]!r} is not a memcached key")
    sock = connected(client)
    deleted = 0
    try:
        for i in range(0, len(raws), BATCH):
            restart()
            batch = raws[i : i + BATCH]
            sock.sendall(b"".join(b"delete " + r + b"\r\n" for r in batch))  # type: ignore[operator]
            reader = Reader(sock)
            for _ in batch:
                line = reader.line()
                if line == b"DELETED":
                    deleted += 1
                elif line != b"NOT_FOUND":
                    raise fail(line)
            if not reader.drained:
                raise ProtocolError("bytes after the end of the reply")
        return deleted
    except BaseException:
        client.close()
        raise
