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

import math
import os
import socket
import ssl
import struct
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
from .base import Backend

__all__ = ["MemcachedBackend", "parse_server"]

_CHUNK_MAGIC = b"XCCHUNK1"
_MANIFEST = struct.Struct("!IQ16s8s")  # chunk count, total size, xxh3-128 digest, nonce
_ITEM_OVERHEAD = 1024  # memcached's per-item header + key, kept free inside item_size


def parse_server(server: str | tuple[str, int] | Sequence[Any]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` -> ``(host, port)``, validated."""
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


@contextmanager
def _mapped(where: str) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:  # socket.timeout is TimeoutError since 3.10
        raise BackendTimeout(f"memcached {where}: no answer in time") from exc
    except MemcacheServerError as exc:
        if "too large" in str(exc):
            raise ValueTooLarge(f"memcached {where}: {exc}") from exc
        raise BackendError(f"memcached {where}: server error {exc}") from exc
    except MemcacheClientError as exc:
        raise BackendError(f"memcached {where}: client error {exc}") from exc
    except (MemcacheUnexpectedCloseError, ConnectionError, socket.gaierror) as exc:
        raise BackendUnavailable(f"memcached {where}: {exc!r}") from exc
    except OSError as exc:
        raise BackendUnavailable(f"memcached {where}: {exc!r}") from exc
    except MemcacheError as exc:
        raise BackendError(f"memcached {where}: {exc!r}") from exc


def _expire(seconds: float) -> int:
    return max(1, math.ceil(seconds)) if seconds else 0


class MemcachedBackend(Backend):
    """A byte store on one memcached server or a cluster (keys spread by rendezvous hashing).

    ``item_size`` must match the servers' ``-I`` (1 MiB by default): values above it are
    chunked. ``max_value_size`` caps what is stored at all. ``dead_timeout`` is how long a
    failed node of a cluster stays out of the ring before it is probed again.
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
        item_size: int = 2**20,
        max_value_size: int = 64 * 2**20,
        dead_timeout: float = 30.0,
        **breaker: Any,
    ) -> None:
        super().__init__(**breaker)
        if isinstance(servers, (str, tuple)):
            servers = [servers]
        self.servers = [parse_server(s) for s in servers]
        if not self.servers:
            raise ConfigError("servers: give at least one 'host:port'")
        for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name}={value!r}: must be a number of seconds > 0")
        if item_size < 2 * _ITEM_OVERHEAD:
            raise ConfigError(f"item_size={item_size!r}: must be at least {2 * _ITEM_OVERHEAD}")
        self.connect_timeout = float(connect_timeout)
        self.timeout = float(timeout)
        self.no_delay = no_delay
        self.tls_context = tls_context
        self.item_size = item_size
        self.max_value_size = max_value_size
        self.dead_timeout = dead_timeout
        self._client: Client | HashClient | None = None
        self._where = ",".join(f"{h}:{p}" for h, p in self.servers)

    # -- connection ----------------------------------------------------------------------------
    @property
    def client(self) -> Client | HashClient:
        if self._client is None:
            common: dict[str, Any] = {
                "connect_timeout": self.connect_timeout,
                "timeout": self.timeout,
                "no_delay": self.no_delay,
                "default_noreply": False,
                "tls_context": self.tls_context,
            }
            if len(self.servers) == 1:
                self._client = Client(self.servers[0], **common)
            else:
                self._client = HashClient(
                    self.servers,
                    retry_attempts=1,
                    retry_timeout=0,
                    dead_timeout=self.dead_timeout,
                    **common,
                )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken socket must not fail the caller
                pass
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        if state.get("tls_context") is not None:
            # SSLContext objects do not pickle; workers must be given their own context.
            raise TypeError(
                "a MemcachedBackend with tls_context cannot be pickled; build it in the worker"
            )
        return state

    # -- primitives ----------------------------------------------------------------------------
    @property
    def _chunk_limit(self) -> int:
        return self.item_size - _ITEM_OVERHEAD

    def get(self, key: str) -> bytes | None:
        with _mapped(self._where):
            value: bytes | None = self.client.get(key)
            if value is not None and value[:8] == _CHUNK_MAGIC:
                return self._assemble(key, value)
            return value

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        with _mapped(self._where):
            found: dict[str, bytes] = self.client.get_many(keys)
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
                raise BackendError(f"memcached {self._where}: set of {key!r} was not stored")

    def set_many(self, items: Mapping[str, bytes], expire: float = 0) -> None:
        small = {k: v for k, v in items.items() if len(v) <= self._chunk_limit}
        for key in items.keys() - small.keys():
            self.set(key, items[key], expire)
        if small:
            with _mapped(self._where):
                failed = self.client.set_many(small, expire=_expire(expire), noreply=False)
            if failed:
                raise BackendError(f"memcached {self._where}: {len(failed)} values not stored")

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        self._check_unchunked(value)
        with _mapped(self._where):
            return bool(self.client.add(key, value, expire=_expire(expire), noreply=False))

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        with _mapped(self._where):
            value, token = self.client.gets(key)
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
        return {"backend": self.name, "servers": [f"{h}:{p}" for h, p in self.servers]}

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
            raise BackendError(f"memcached {self._where}: {len(failed)} chunks not stored")
        digest = xxhash.xxh3_128_digest(value)
        return _CHUNK_MAGIC + _MANIFEST.pack(len(chunks), len(value), digest, nonce)

    def _assemble(self, key: str, manifest: bytes) -> bytes | None:
        try:
            count, total, digest, nonce = _MANIFEST.unpack(manifest[8:])
        except struct.error:
            return None
        if count > 1 + (self.max_value_size or total) // max(1, self._chunk_limit):
            return None
        names = [f"{key}:c{i}:{nonce.decode('ascii', 'replace')}" for i in range(count)]
        parts = self.client.get_many(names)
        if len(parts) != count:
            return None  # some chunk was evicted: a miss, never a partial value
        value = b"".join(parts[name] for name in names)
        if len(value) != total or xxhash.xxh3_128_digest(value) != digest:
            return None
        return value
