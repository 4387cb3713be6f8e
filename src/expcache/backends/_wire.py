"""memcached's text protocol written by expcache itself, on pymemcache's own connections.

pymemcache parses replies line by line and joins every value from
pieces (~5 us per call, and three copies of a large value); the hit path instead writes ``get``
itself and reads each value into one buffer: a small reply arrives in one ``recv`` and is
sliced, a large one is received with ``recv_into`` straight into a preallocated ``bytearray``
of the declared size (bounded by ``limit``, so a hostile header cannot make us allocate a
terabyte). Multi-item exchanges (a large value's chunks, pipelined sets and deletes) are in
``_bulk``, on this module's reader. The connection stays pymemcache's (same socket, reconnection, TLS), and requests are
strictly sequential per thread, so the two take turns on it; any failure closes the socket,
because a half-read reply must never be read as the next command's.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from typing import Any, Final

from pymemcache.client.base import Client
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from ._deadline import DeadlineSocket

__all__ = [
    "BATCH",
    "ProtocolError",
    "Reader",
    "connected",
    "fail",
    "get",
    "get_many",
    "token",
    "value_head",
]

_RECV = 65536
_MAX_LINE = 8192  # a reply line (key <= 250 bytes, URL-encoded x3 in metadump) is far shorter
_END = b"END\r\n"
_CONTROL = bytes(range(33)) + b"\x7f"  # whitespace and control bytes: not in a key
BATCH = 200  # keys per pipelined request: bounded request lines and reply bursts
_SMALL = 16384  # a value below this that arrives in pieces is appended, not preallocated
_PLAIN: Final = socket.socket  # exactly: an SSLSocket (a subclass) must go through TLS
_write = os.write


class ProtocolError(Exception):
    """The server's reply does not follow the protocol (or claims an absurd size)."""


def token(key: str) -> bytes | None:
    """The key as a protocol token, or None when only pymemcache may judge (and refuse) it."""
    if not key.isascii() or len(key) > 250:
        return None
    raw = key.encode()
    return raw if len(raw.translate(None, _CONTROL)) == len(raw) else None


def connected(client: Client) -> Any:
    if client.sock is None:
        client._connect()  # pymemcache's own connect: timeouts, no_delay, TLS, our sockets
    return client.sock


class Reader:
    """The replies to one request, buffered; values land in buffers the caller chooses."""

    __slots__ = ("buf", "pos", "sock")

    def __init__(self, sock: Any, initial: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(initial)
        self.pos = 0

    def _fill(self) -> None:
        more = self.sock.recv(_RECV)
        if not more:
            raise MemcacheUnexpectedCloseError()
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += more

    def line(self, end: bytes = b"\r\n") -> bytes:
        eol = self.buf.find(end, self.pos)
        while eol < 0:
            if len(self.buf) - self.pos > _MAX_LINE:
                raise ProtocolError("reply line too long")
            self._fill()
            eol = self.buf.find(end, self.pos)
        line = bytes(self.buf[self.pos : eol])
        self.pos = eol + len(end)
        return line

    def read_into(self, view: memoryview) -> None:
        size = len(view)
        take = min(len(self.buf) - self.pos, size)
        if take:
            view[:take] = memoryview(self.buf)[self.pos : self.pos + take]
            self.pos += take
        while take < size:
            got = self.sock.recv_into(view[take:])
            if not got:
                raise MemcacheUnexpectedCloseError()
            take += got

    def value(self, size: int) -> bytes | bytearray:
        if len(self.buf) - self.pos >= size:
            with memoryview(self.buf) as view:
                out: bytes | bytearray = bytes(view[self.pos : self.pos + size])
            self.pos += size
        else:
            out = bytearray(size)
            self.read_into(memoryview(out))
        self.crlf()
        return out

    def skip(self, size: int) -> None:
        scratch = memoryview(bytearray(min(size, _RECV)))
        while size:
            part = scratch[: min(size, len(scratch))]
            self.read_into(part)
            size -= len(part)
        self.crlf()

    def crlf(self) -> None:
        while len(self.buf) - self.pos < 2:
            self._fill()
        if self.buf[self.pos : self.pos + 2] != b"\r\n":
            raise ProtocolError("value not followed by CRLF")
        self.pos += 2

    @property
    def drained(self) -> bool:
        return self.pos == len(self.buf)


def fail(line: bytes) -> ProtocolError:
    """An error reply raised as pymemcache would (the backend maps them), else a protocol error."""
    text = line.decode("ascii", "replace")
    if line.startswith(b"SERVER_ERROR"):
        raise MemcacheServerError(text[len("SERVER_ERROR ") :])
    if line.startswith(b"CLIENT_ERROR"):
        raise MemcacheClientError(text)
    return ProtocolError(f"unexpected reply {text[:64]!r}")


def value_head(line: bytes, limit: int) -> tuple[bytes, int]:
    """``VALUE <key> <flags> <bytes>`` -> (key, size), the size checked against ``limit``."""
    head = line.split()
    if len(head) != 4 or head[0] != b"VALUE":
        raise fail(line)
    if not head[3].isdigit() or int(head[3]) > limit:
        raise ProtocolError(f"value of {head[3][:20]!r} bytes exceeds the limit of {limit}")
    return head[1], int(head[3])


def get(client: Client, key: str, limit: int) -> bytes | bytearray | None:
    """``get key``: the hit path's one round trip (a small reply in one ``recv``, sliced).

    On a plain TCP (or Unix) socket the request is armed once and written with one
    ``os.write`` on the descriptor, which is non-blocking once the deadline has set a timeout:
    a Python ``sendall`` on a socket with a timeout first ``poll()``s for writability, an extra
    system call on every hit (~0.7-1 µs next to a round trip), for a request of ~60 bytes into
    an empty send buffer (requests are strictly sequential per connection). The first
    ``recv`` then runs under the timeout the arming set, at most the deadline's slack past it.
    A request the kernel does not take whole at once (it never happens here, but it could)
    is finished by ``sendall``. TLS sockets take the general path.
    """
    raw = token(key)
    if raw is None:
        value: bytes | None = client.get(key)
        return value
    sock = client.sock
    if sock is None:
        sock = connected(client)
    try:
        request = b"get " + raw + b"\r\n"
        if type(sock) is DeadlineSocket and type(plain := sock._sock) is _PLAIN:
            sock._arm()
            try:
                sent = _write(plain.fileno(), request)
            except BlockingIOError:
                sent = 0
            if sent != len(request):
                sock.sendall(request[sent:])
            buf = plain.recv(_RECV)
        else:
            sock.sendall(request)
            buf = sock.recv(_RECV)
        if buf == _END:
            return None
        head_end = buf.find(b"\r\n")
        if head_end > 0 and buf.endswith(b"\r\nEND\r\n"):
            head = buf[:head_end].split()
            if len(head) == 4 and head[0] == b"VALUE" and head[1] == raw and head[3].isdigit():
                start = head_end + 2
                end = start + int(head[3])
                if end + 7 == len(buf):
                    small: bytes = buf[start:end]
                    return small
        reader = Reader(sock, buf)  # a reply over several receives, or a malformed one
        line = reader.line()
        if line == b"END":
            out: bytes | bytearray | None = None
        else:
            name, size = value_head(line, limit)
            if name != raw:
                raise ProtocolError(f"reply for {name[:64]!r} to a get of {raw!r}")
            out = reader.value(size)
            if reader.line() != b"END":
                raise ProtocolError("more than one value for one key")
        if not reader.drained:
            raise ProtocolError("bytes after the end of the reply")
        return out
    except BaseException:
        client.close()
        raise


def get_many(client: Client, keys: Sequence[str], limit: int) -> dict[str, bytes | bytearray]:
    """``get k1 k2 ...``: values of the keys that are present.

    The batch hot path (``Memoized.map`` of hits). The keys are checked together (one join,
    one ``translate``: the same verdict as ``token`` per key, which cost ~0.2 µs a key) and
    each canonical ``VALUE <key> <flags> <bytes>`` line is parsed by one regex match; a value
    that did not arrive whole and is not small is received into its own buffer instead.
    """
    if not keys:
        return {}
    raws = _tokens(keys)
    if raws is None:
        found: dict[str, bytes | bytearray] = client.get_many(keys)
        return found
    sock = client.sock
    if sock is None:
        sock = connected(client)
    out: dict[str, bytes | bytearray] = {}
    try:
        for i in range(0, len(raws), BATCH):
            batch = raws[i : i + BATCH]
            _send(sock, b"get " + b" ".join(batch) + b"\r\n")
            _read_values(sock, dict(zip(batch, keys[i : i + BATCH], strict=True)), limit, out)
        return out
    except BaseException:
        client.close()
        raise


def _tokens(keys: Sequence[str]) -> list[bytes] | None:
    """Every key as a protocol token (``token`` of each), or None if one is not a token."""
    joined = " ".join(keys)
    if not joined.isascii() or max(map(len, keys)) > 250:
        return None
    raw = joined.encode()
    gaps = len(keys) - 1  # the joining spaces: any other whitespace or control byte is a key's
    if raw.count(b" ") != gaps or len(raw.translate(None, _CONTROL)) != len(raw) - gaps:
        return None
    return raw.split(b" ")


def _send(sock: Any, request: bytes) -> None:
    """``sendall`` without the poll() (see ``get``) on a plain socket."""
    if type(sock) is DeadlineSocket and type(plain := sock._sock) is _PLAIN:
        sock._arm()
        try:
            sent = _write(plain.fileno(), request)
        except BlockingIOError:
            sent = 0
        if sent != len(request):
            sock.sendall(request[sent:])
    else:
        sock.sendall(request)


def _more(sock: Any) -> bytes:
    more: bytes = sock.recv(_RECV)
    if not more:
        raise MemcacheUnexpectedCloseError()
    return more


# memcached's own form of a value line; any other form (extra spaces, odd flags) is left to
# value_head, which accepts what it always accepted
_VALUE_LINE = re.compile(rb"VALUE ([!-~]+) [0-9]+ ([0-9]+)\r\n")


def _read_values(
    sock: Any, wanted: dict[bytes, str], limit: int, out: dict[str, bytes | bytearray]
) -> None:
    """The values of one ``get`` reply into ``out``, under the keys ``wanted`` maps to."""
    buf, pos = _more(sock), 0
    match = _VALUE_LINE.match
    while True:
        line = match(buf, pos)
        if line is not None:
            name, digits = line.groups()
            size = int(digits)
            if size > limit:
                raise ProtocolError(f"value of {digits[:20]!r} bytes exceeds the limit of {limit}")
            start = line.end()
        else:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > _MAX_LINE:
                    raise ProtocolError("reply line too long")
                buf, pos = buf[pos:] + _more(sock), 0
                continue
            if eol == pos + 3 and buf[pos:eol] == b"END":
                if eol + 2 != len(buf):
                    raise ProtocolError("bytes after the end of the reply")
                return
            name, size = value_head(buf[pos:eol], limit)
            start = eol + 2
        key = wanted.get(name)
        if key is None:
            raise ProtocolError(f"reply for {name[:64]!r}, which was not asked for")
        end = start + size
        if end + 2 <= len(buf):
            if buf[end : end + 2] != b"\r\n":
                raise ProtocolError("value not followed by CRLF")
            out[key] = buf[start:end]
            pos = end + 2
        elif size < _SMALL:  # wait for the rest with the line: re-parsed, costs nothing
            buf, pos = buf[pos:] + _more(sock), 0
        else:
            reader = Reader(sock, buf[start:])
            out[key] = reader.value(size)
            buf, pos = bytes(reader.buf[reader.pos :]), 0
            if not buf:
                buf = _more(sock)
