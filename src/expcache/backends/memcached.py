"""memcached through pymemcache: one server, or several through ``HashClient``.

What this layer adds to pymemcache, and why:

- **Lazy connection.** Nothing connects before the first operation, so building or unpickling
  a memoized function never needs the server; a pickled backend drops its sockets and
  reconnects in the worker with the same settings (retry behaviour included).
- **Replies, always.** ``default_noreply=False``: a refused store raises instead of silently
  vanishing (the seed counted unsent values as stored).
- **Error mapping.** Timeouts, refused/closed connections and server errors become
  ``BackendTimeout`` / ``BackendUnavailable`` / ``ValueTooLarge`` / ``BackendError``.
- **Chunking.** A value above ``item_size`` is written as chunks under ``<key>:c<i>:<nonce>``
  followed by a manifest under ``<key>`` carrying the chunk count, total size and an xxh3-128
  digest. A reader that finds any chunk missing (evicted) or a digest mismatch sees a miss,
  never a corrupt value; the per-write nonce keeps two concurrent writers' chunks apart.
"""

from __future__ import annotations

import contextlib
import math
import os
import ssl
import struct
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import xxhash
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from ..errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError, ValueTooLarge
from .base import Backend, StoreRefused

__all__ = ["MemcachedBackend", "parse_server"]

_CHUNK_MAGIC = b"XCCHUNK1"
_MANIFEST = struct.Struct("!IQ16s8s")  # chunk count, total size, xxh3-128 digest, nonce
_ITEM_OVERHEAD = 1024  # memcached's per-item header + key, kept free inside item_size
_HEX = frozenset(b"0123456789abcdef")


def parse_server(server: str | tuple[str, int] | Sequence[Any]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` -> ``(host, port)``, validated."""
    port: Any
    if isinstance(server, str):
        host, sep, port_s = server.strip().rpartition(":")
        if not sep or not host or not port_s.isdigit():
            raise ConfigError(
                f"server {server!r}: expected 'host:port', e.g. '127.0.0.1:11211'"
            )
        host, port = host.strip("[]"), int(port_s)
    elif isinstance(server, Sequence) and len(server) == 2:
        host, port = str(server[0]), server[1]
        if isinstance(port, str) and port.isdigit():
            port = int(port)
    else:
        raise ConfigError(f"server {server!r}: expected 'host:port' or a (host, port) pair")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"server {server!r}: port must be an integer in 1..65535")
    return host, port


def _translate(exc: BaseException, where: str) -> BackendError:
    """pymemcache and socket errors -> ours. Order matters: ``MemcacheUnexpectedCloseError``
    is a ``MemcacheServerError`` subclass but means a lost connection, not a server reply."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return BackendTimeout(f"memcached {where}: no answer in time")
    if isinstance(exc, MemcacheUnexpectedCloseError):
        return BackendUnavailable(f"memcached {where}: connection closed by the server")
    if isinstance(exc, MemcacheServerError):
        text = str(exc)
        if "too large" in text:
            return ValueTooLarge(f"memcached {where}: {text}")
        if "out of memory" in text:
            return StoreRefused(f"memcached {where}: server full: {text}")
        return BackendError(f"memcached {where}: server error {text}")
    if isinstance(exc, MemcacheClientError):
        return BackendError(f"memcached {where}: client error {exc}")
    if isinstance(exc, OSError):  # refused, reset, unreachable, not resolvable
        return BackendUnavailable(f"memcached {where}: {exc!r}")
    if isinstance(exc, MemcacheError):
        return BackendError(f"memcached {where}: {exc!r}")
    # A client bug must cost a counted miss, not the caller's call.
    return BackendError(f"memcached {where}: unexpected {exc!r}")


@contextmanager
def _mapped(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise _translate(exc, where) from exc


_END = b"END\r\n"
_CONTROL = bytes(range(33)) + b"\x7f"  # whitespace and control bytes: not in a key


def _pymemcache_get(client: Client, key: str) -> bytes | None:
    value: bytes | None = client.get(key)
    return value


def _token(key: str) -> bytes | None:
    """The key as a protocol token, or None when only pymemcache may judge it."""
    if not key.isascii() or len(key) > 250:
        return None
    raw = key.encode()
    return raw if len(raw.translate(None, _CONTROL)) == len(raw) else None


def _direct_get_many(client: Client, keys: Sequence[str]) -> dict[str, bytes]:
    """``get k1 k2 ...`` on the client's socket; the reply parsed with ``find`` and slices.

    The same contract as ``_direct_get`` (shared connection, closed on any failure); a reply
    is a run of ``VALUE <key> <flags> <size>`` blocks ended by ``END``.
    """
    raws = [_token(k) for k in keys]
    if None in raws:
        found: dict[str, bytes] = client.get_many(keys)
        return found
    if client.sock is None:
        client._connect()
    sock = client.sock
    try:
        sock.sendall(b"get " + b" ".join(raws) + b"\r\n")  # type: ignore[arg-type]
        buf = bytearray(sock.recv(262144))
        out: dict[str, bytes] = {}
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            while eol < 0:
                more = sock.recv(262144)
                if not more:
                    raise MemcacheUnexpectedCloseError()
                buf += more
                eol = buf.find(b"\r\n", pos)
            head = bytes(buf[pos:eol]).split()
            if head == [b"END"]:
                if eol + 2 != len(buf):
                    raise MemcacheUnexpectedCloseError()
                return out
            if len(head) < 4 or head[0] != b"VALUE":
                if head and head[0].endswith(b"ERROR"):
                    raise MemcacheServerError(b" ".join(head).decode("ascii", "replace"))
                raise MemcacheUnexpectedCloseError()
            start = eol + 2
            end = start + int(head[3])
            while len(buf) < end + 2:
                more = sock.recv(max(end + 2 - len(buf), 262144))
                if not more:
                    raise MemcacheUnexpectedCloseError()
                buf += more
            if buf[end : end + 2] != b"\r\n":
                raise MemcacheUnexpectedCloseError()
            out[head[1].decode()] = bytes(buf[start:end])
            pos = end + 2
    except BaseException:
        client.close()
        raise


def _direct_get(client: Client, key: str) -> bytes | None:
    """``get`` written on the client's own socket: the hit path's one round trip.

    pymemcache parses replies line by line in Python (~5 us a call); a single ``get`` reply is
    ``VALUE <key> <flags> <size>\\r\\n<data>\\r\\nEND\\r\\n`` or ``END\\r\\n``, read here with one or
    two ``recv``. The connection is pymemcache's (same socket, timeout and reconnection), and
    requests are strictly sequential per thread, so the two can take turns on it. Keys that
    are not plain protocol tokens go through pymemcache, which rejects them.
    """
    raw = _token(key)
    if raw is None:
        return _pymemcache_get(client, key)
    if client.sock is None:
        client._connect()  # pymemcache 4's own connect: timeouts, no_delay, TLS
    sock = client.sock
    try:
        sock.sendall(b"get " + raw + b"\r\n")
        buf = sock.recv(65536)
        if buf == _END:
            return None
        while b"\r\n" not in buf:
            more = sock.recv(65536)
            if not more:
                raise MemcacheUnexpectedCloseError()
            buf += more
        head_end = buf.index(b"\r\n")
        head = buf[:head_end].split()
        if not head or head[0] != b"VALUE" or len(head) < 4:
            if head and head[0].endswith(b"ERROR"):
                raise MemcacheServerError(buf[:head_end].decode("ascii", "replace"))
            raise MemcacheUnexpectedCloseError()
        start = head_end + 2
        end = start + int(head[3])
        total = end + 7  # b"\r\nEND\r\n"
        if len(buf) < total:
            parts = bytearray(buf)
            while len(parts) < total:
                more = sock.recv(max(total - len(parts), 65536))
                if not more:
                    raise MemcacheUnexpectedCloseError()
                parts += more
            buf = bytes(parts)
        if buf[end:total] != b"\r\n" + _END or len(buf) != total:
            raise MemcacheUnexpectedCloseError()
        value: bytes = buf[start:end]
        return value
    except BaseException:
        client.close()  # a half-read reply must never be read as the next command's
        raise


def _expire(seconds: float) -> int:
    return max(1, math.ceil(seconds)) if seconds else 0


_LIVE: weakref.WeakSet[MemcachedBackend] = weakref.WeakSet()


def _forget_sockets_after_fork() -> None:
    # A forked child must not talk over its parent's sockets: the two would interleave
    # requests and read each other's replies.
    for backend in list(_LIVE):
        backend._reset_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sockets_after_fork)


class MemcachedBackend(Backend):
    """A byte store on one memcached server or a cluster (keys spread by rendezvous hashing).

    ``item_size`` must match the servers' ``-I`` (1 MiB by default): values above it are
    chunked. ``max_value_size`` caps what is stored at all. ``dead_timeout`` is how long a
    failed node of a cluster stays out of the ring (its keys go to the other nodes) before it
    is tried again.

    Connections are per thread: a pymemcache client is not thread-safe, and the lease renewer
    of the memoizer runs in a thread of its own.

    TLS: pass ``tls_context`` (an ``ssl.SSLContext``; such a backend cannot be pickled), or
    ``tls=True`` with optional ``tls_ca_file``/``tls_cert_file``/``tls_key_file``, which are
    plain settings that travel to workers and rebuild the context there.
    """

    name: ClassVar[str] = "memcached"
    shared: ClassVar[bool] = True

    def __init__(
        self,
        servers: str | tuple[str, int] | Sequence[Any] = ("127.0.0.1", 11211),
        *,
        connect_timeout: float = 1.0,
        timeout: float = 0.5,
        no_delay: bool = True,
        tls_context: ssl.SSLContext | None = None,
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        item_size: int = 2**20,
        max_value_size: int = 64 * 2**20,
        dead_timeout: float = 30.0,
        **breaker: Any,
    ) -> None:
        super().__init__(**breaker)
        specs: Sequence[Any] = [servers] if isinstance(servers, (str, tuple)) else servers
        self.servers = [parse_server(s) for s in specs]
        if not self.servers:
            raise ConfigError("servers: give at least one 'host:port'")
        for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name}={value!r}: must be a number of seconds > 0")
        if item_size < 2 * _ITEM_OVERHEAD:
            raise ConfigError(f"item_size={item_size!r}: must be at least {2 * _ITEM_OVERHEAD}")
        if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
            raise ConfigError(f"tls_context={tls_context!r}: expected an ssl.SSLContext")
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.no_delay = no_delay
        self.tls = bool(tls or tls_ca_file or tls_cert_file or tls_context is not None)
        self.tls_ca_file = tls_ca_file
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self._own_tls_context = tls_context is None and self.tls
        self.tls_context = tls_context if tls_context is not None else self._build_tls()
        self.item_size = item_size
        self.max_value_size = max_value_size
        self.dead_timeout = dead_timeout
        self._where = ",".join(f"{h}:{p}" for h, p in self.servers)
        self._reset_connections()
        _LIVE.add(self)

    def _build_tls(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls_ca_file={self.tls_ca_file!r}: cannot load CA certificates ({exc}); "
                "give the path of a PEM bundle, or leave it unset for the system CAs"
            ) from exc
        if self.tls_cert_file:
            try:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"tls_cert_file={self.tls_cert_file!r}, tls_key_file={self.tls_key_file!r}: "
                    f"cannot load the client certificate ({exc})"
                ) from exc
        return context

    # -- connection ----------------------------------------------------------------------------
    def _reset_connections(self) -> None:
        self._local = threading.local()
        # Weak: when a thread ends, its thread-local client goes and its socket with it.
        self._clients: weakref.WeakSet[Client | HashClient] = weakref.WeakSet()
        self._clients_lock = threading.Lock()

    @property
    def client(self) -> Client | HashClient:
        """This thread's pymemcache client (created, not connected, on first use)."""
        try:
            client: Client | HashClient = self._local.client
        except AttributeError:
            client = self._new_client()
        return client

    @property
    def connections(self) -> int:
        """How many pymemcache clients are alive (each connects on its first command)."""
        return len(self._clients)

    def _new_client(self) -> Client | HashClient:
        common: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "no_delay": self.no_delay,
            "default_noreply": False,
            "tls_context": self.tls_context,
        }
        client: Client | HashClient
        if len(self.servers) == 1:
            client = Client(self.servers[0], **common)
        else:
            # retry_attempts=0: a failing node leaves the ring at its first failure and its
            # keys move to the others. With retries, HashClient answers *default values*
            # (False for add/cas, None for gets, {} for get_many) during its retry window
            # without raising, which would look like a taken lease or a lost CAS race.
            client = HashClient(
                self.servers,
                retry_attempts=0,
                retry_timeout=0,
                dead_timeout=self.dead_timeout,
                **common,
            )
        self._local.client = client
        with self._clients_lock:
            self._clients.add(client)
        return client

    def close(self) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(Exception):  # a broken socket must not fail the caller
                client.close()
        self._reset_connections()

    def __getstate__(self) -> dict[str, Any]:
        if self.tls_context is not None and not self._own_tls_context:
            # SSLContext objects do not pickle. Settings do: tls=True + tls_*_file.
            raise TypeError(
                "a MemcachedBackend built with tls_context=<SSLContext> cannot be pickled; "
                "use tls=True with tls_ca_file/tls_cert_file/tls_key_file instead, which "
                "rebuild the context in the worker"
            )
        state = {k: v for k, v in self.__dict__.items() if k not in _RUNTIME}
        state["tls_context"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tls_context = self._build_tls()
        self._reset_connections()
        _LIVE.add(self)

    # -- primitives ----------------------------------------------------------------------------
    @property
    def _chunk_limit(self) -> int:
        return self.item_size - _ITEM_OVERHEAD

    def get(self, key: str) -> bytes | None:
        try:
            client = self._local.client
        except AttributeError:
            client = self._new_client()
        try:
            value = _direct_get(client, key) if type(client) is Client else client.get(key)
            if value is not None and value[:8] == _CHUNK_MAGIC:
                return self._assemble(key, value)
        except Exception as exc:
            raise _translate(exc, self._where) from exc
        return value

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        with _mapped(self._where):
            client = self.client
            found = (
                _direct_get_many(client, keys) if type(client) is Client
                else client.get_many(keys)
            )
            for key, value in list(found.items()):
                if value[:8] == _CHUNK_MAGIC:
                    whole = self._assemble(key, value)
                    if whole is None:
                        del found[key]
                    else:
                        found[key] = whole
            return found

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        self.check_size(value)
        with _mapped(self._where):
            if len(value) > self._chunk_limit:
                value = self._write_chunks(key, value, expire)
            if not self.client.set(key, value, expire=_expire(expire), noreply=False):
                raise StoreRefused(f"memcached {self._where}: set of {key!r} was not stored")

    def set_many(self, items: Mapping[str, bytes], expire: float = 0) -> None:
        for value in items.values():
            self.check_size(value)
        small = {k: v for k, v in items.items() if len(v) <= self._chunk_limit}
        for key in items.keys() - small.keys():
            self.set(key, items[key], expire)
        if small:
            with _mapped(self._where):
                failed = self.client.set_many(small, expire=_expire(expire), noreply=False)
            if failed:
                raise StoreRefused(f"memcached {self._where}: {len(failed)} values not stored")

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        self._check_unchunked(value)
        with _mapped(self._where):
            return bool(self.client.add(key, value, expire=_expire(expire), noreply=False))

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        with _mapped(self._where):
            got = self.client.gets(key)
            if got is None:  # HashClient's "default value" for a node it gave up on
                raise BackendUnavailable(f"memcached {self._where}: gets of {key!r} got no reply")
            value, token = got
            return value, token

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        self._check_unchunked(value)
        with _mapped(self._where):
            result: bool | None = self.client.cas(
                key, value, token, expire=_expire(expire), noreply=False
            )
            return result

    def touch(self, key: str, expire: float) -> bool:
        with _mapped(self._where):
            return bool(self.client.touch(key, expire=_expire(expire), noreply=False))

    def incr(self, key: str, delta: int = 1) -> int:
        if delta < 0:
            raise ValueError("memcached counters only grow: delta must be >= 0")
        with _mapped(self._where):
            for _ in range(3):
                value = self.client.incr(key, delta, noreply=False)
                if value is not None:
                    return int(value)
                if self.client.add(key, str(delta).encode(), noreply=False):
                    return delta
            raise BackendError(f"memcached {self._where}: incr of {key!r} kept racing")

    def delete(self, key: str) -> None:
        with _mapped(self._where):
            self.client.delete(key, noreply=False)

    def clear(self) -> None:
        with _mapped(self._where):
            self.client.flush_all(noreply=False)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "servers": [f"{h}:{p}" for h, p in self.servers],
            "timeout": self.timeout,
            "tls": self.tls,
        }

    # -- chunking --------------------------------------------------------------------------------
    def _check_unchunked(self, value: bytes) -> None:
        if len(value) > self._chunk_limit:
            raise ValueTooLarge(
                f"atomic updates are limited to one memcached item ({self._chunk_limit} bytes)"
            )

    def _write_chunks(self, key: str, value: bytes, expire: float) -> bytes:
        nonce = os.urandom(4).hex().encode()
        size = self._chunk_limit
        view = memoryview(value)
        chunks = {
            f"{key}:c{i}:{nonce.decode()}": bytes(view[off : off + size])
            for i, off in enumerate(range(0, len(value), size))
        }
        failed = self.client.set_many(chunks, expire=_expire(expire), noreply=False)
        if failed:
            raise StoreRefused(f"memcached {self._where}: {len(failed)} chunks not stored")
        digest = xxhash.xxh3_128_digest(value)
        return _CHUNK_MAGIC + _MANIFEST.pack(len(chunks), len(value), digest, nonce)

    def _assemble(self, key: str, manifest: bytes) -> bytes | None:
        try:
            count, total, digest, nonce = _MANIFEST.unpack(manifest[8:])
        except struct.error:
            return None
        if count > 1 + (self.max_value_size or total) // max(1, self._chunk_limit):
            return None
        if not _HEX.issuperset(nonce):
            return None  # not a manifest we wrote: its chunk names would not even be keys
        names = [f"{key}:c{i}:{nonce.decode()}" for i in range(count)]
        parts = self.client.get_many(names)
        if len(parts) != count:
            return None  # some chunk was evicted: a miss, never a partial value
        value = b"".join(parts[name] for name in names)
        if len(value) != total or xxhash.xxh3_128_digest(value) != digest:
            return None
        return value


_RUNTIME = frozenset({"_local", "_clients", "_clients_lock"})
