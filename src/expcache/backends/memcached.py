"""memcached through pymemcache: one server, or several through ``HashClient``.

What this layer adds to pymemcache, and why:

- **Lazy connection.** Nothing connects before the first operation, so building or unpickling
  a memoized function never needs the server; a pickled backend drops its sockets and
  reconnects in the worker with the same settings (retry behaviour included).
- **Replies, always.** ``default_noreply=False``: a refused store raises instead of silently
  vanishing (the seed counted unsent values as stored).
- **One deadline per operation** (``Deadline``), not per socket read.
- **Error mapping.** Timeouts, refused/closed connections and server errors become
  ``BackendTimeout`` / ``BackendUnavailable`` / ``ValueTooLarge`` / ``StoreRefused`` /
  ``BackendError``.
- **Chunking.** A value above ``item_size`` is written as chunks under ``<key>:c<i>:<nonce>``
  followed by a manifest under ``<key>`` carrying the chunk count, total size and an xxh3-128
  digest. A reader that finds any chunk missing (evicted) or a digest mismatch sees a miss,
  never a corrupt value; the per-write nonce keeps two concurrent writers' chunks apart.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, cast

from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from .. import _validate as v
from ..errors import BackendError, BackendUnavailable, ValueTooLarge
from . import _chunks, _mcadmin, _wire
from ._deadline import Deadline, DeadlineSocketModule, DeadlineTLSContext
from ._mcsettings import build_tls, check_tls, parse_server, server_list
from ._mcsettings import expire_time as _expire
from ._mcsettings import mapped as _mapped
from ._mcsettings import translate as _translate
from .base import Backend, Data, Scope, StoreRefused

__all__ = ["MemcachedBackend", "parse_server"]

_CHUNK_MAGIC = _chunks.CHUNK_MAGIC
_MANIFEST = _chunks.MANIFEST  # chunk count, total size, xxh3-128 digest, nonce
_ITEM_OVERHEAD = 1024  # memcached's per-item header + key, kept free inside item_size
_LIVE: weakref.WeakSet[MemcachedBackend] = weakref.WeakSet()


def _forget_sockets_after_fork() -> None:
    # A forked child must not talk over its parent's sockets: the two would interleave
    # requests and read each other's replies.
    for backend in list(_LIVE):
        backend._reset_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_sockets_after_fork)

_Conn = tuple[Client | HashClient, Deadline]


class MemcachedBackend(Backend):
    """A byte store on one memcached server or a cluster (keys spread by rendezvous hashing).

    ``timeout`` bounds each operation as a whole, not each socket read: an operation fails
    with ``BackendTimeout`` about ``timeout`` after it started, however the server paces its
    bytes. Two kinds of progress earn a fresh ``timeout``: (re)connecting (itself bounded by
    ``connect_timeout``), and each whole chunk of a chunked value moved, so a 64 MiB value on
    a slow link needs ``item_size`` per ``timeout``, not 64 MiB. Name resolution is the
    resolver's and not bounded here.

    ``expire`` above 30 days is sent as an absolute Unix time (``time.time() + expire``,
    this host's clock): memcached reads any exptime above 2592000 as a Unix time, so a
    relative 40 days would have expired every entry at once.

    ``item_size`` must match the servers' ``-I`` (1 MiB by default): values above it are
    chunked. ``max_value_size`` caps what is stored at all, and what a reply may claim to be.
    ``dead_timeout`` is how long a failed node of a cluster stays out of the ring (its keys go
    to the other nodes) before it is tried again.

    Connections are per thread: a pymemcache client is not thread-safe, and the lease renewer
    of the memoizer runs in a thread of its own.

    TLS: pass ``tls_context`` (an ``ssl.SSLContext``; such a backend cannot be pickled), or
    ``tls=True`` with optional ``tls_ca_file``/``tls_cert_file``/``tls_key_file``, which are
    plain settings that travel to workers and rebuild the context there. ``probe()`` and
    every administrative command use the same settings.

    Enumeration, prefix clears, statistics and probes: see ``_mcadmin``.
    """

    name: ClassVar[str] = "memcached"
    scope: ClassVar[Scope] = "network"

    def __init__(
        self,
        servers: str | tuple[str, int] | Sequence[str | tuple[str, int]] = ("127.0.0.1:11211",),
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
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
    ) -> None:
        super().__init__(breaker_threshold=breaker_threshold, breaker_cooldown=breaker_cooldown)
        self.servers = server_list(servers)
        self.connect_timeout = v.number("connect_timeout", connect_timeout, gt=0, unit="seconds")
        self.timeout = v.number("timeout", timeout, gt=0, unit="seconds")
        self.no_delay = v.boolean("no_delay", no_delay)
        check_tls(tls_context, tls, tls_ca_file, tls_cert_file, tls_key_file)
        self.item_size: int = v.integer(
            "item_size", item_size, ge=2 * _ITEM_OVERHEAD, le=2**30,
            hint="bytes, at least 2048 and at most 1 GiB: the servers' -I",
        )
        self.max_value_size = v.integer("max_value_size", max_value_size, ge=1024)
        self.dead_timeout = v.number("dead_timeout", dead_timeout, ge=0, unit="seconds")
        self.tls = bool(tls or tls_ca_file or tls_cert_file or tls_context is not None)
        self.tls_ca_file = tls_ca_file
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self._own_tls_context = tls_context is None and self.tls
        self.tls_context = tls_context if tls_context is not None else self._build_tls()
        self._where = ",".join(f"{h}:{p}" for h, p in self.servers)
        self._reset_connections()
        _LIVE.add(self)

    def _build_tls(self) -> ssl.SSLContext | None:
        return build_tls(self.tls, self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    # -- connection ----------------------------------------------------------------------------
    def _reset_connections(self) -> None:
        self._local = threading.local()
        # Weak: when a thread ends, its thread-local client goes and its socket with it.
        self._clients: weakref.WeakSet[Client | HashClient] = weakref.WeakSet()
        self._clients_lock = threading.Lock()

    @property
    def client(self) -> Client | HashClient:
        """This thread's pymemcache client (created, not connected, on first use)."""
        return self._conn()[0]

    @property
    def connections(self) -> int:
        """How many pymemcache clients are alive (each connects on its first command)."""
        return len(self._clients)

    @property
    def where(self) -> str:
        return self._where

    def _settings(self, deadline: Deadline) -> dict[str, Any]:
        tls = DeadlineTLSContext(self.tls_context) if self.tls_context else None
        return {
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "no_delay": self.no_delay,
            "default_noreply": False,
            "tls_context": tls,
            "socket_module": DeadlineSocketModule(deadline),
        }

    def _node(self, server: tuple[str, int]) -> tuple[Client, Deadline]:
        """A connection of its own to one node (probes, dumps, stats: never the thread's)."""
        deadline = Deadline(self.timeout)
        return Client(server, **self._settings(deadline)), deadline

    def _conn(self) -> _Conn:
        try:
            conn: _Conn = self._local.conn
        except AttributeError:
            conn = self._new_client()
        return conn

    def _new_client(self) -> _Conn:
        deadline = Deadline(self.timeout)
        client: Client | HashClient
        if len(self.servers) == 1:
            client = Client(self.servers[0], **self._settings(deadline))
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
                **self._settings(deadline),
            )
        self._local.conn = (client, deadline)
        with self._clients_lock:
            self._clients.add(client)
        return client, deadline

    def _start(self) -> Client | HashClient:
        """This thread's client, its deadline started: the beginning of one operation."""
        client, deadline = self._conn()
        deadline.start()
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

    @property
    def _read_limit(self) -> int:
        """The largest reply accepted: a server (or impostor) claiming more is not believed."""
        return max(self.item_size, self.max_value_size or 0)

    def get(self, key: str) -> Data | None:
        try:
            client, deadline = self._local.conn
        except AttributeError:
            client, deadline = self._new_client()
        deadline.start()
        try:
            if type(client) is Client:  # _read_limit inline: a property is a call per hit
                value = _wire.get(client, key, max(self.item_size, self.max_value_size or 0))
            else:
                value = client.get(key)
            if value is not None and value[:8] == _CHUNK_MAGIC:
                value = self._assemble(client, deadline, key, value)
        except Exception as exc:
            raise _translate(exc, self._where) from exc
        return value  # type: ignore[return-value]  # Data is bytes | bytearray (see base.Data)

    def get_many(self, keys: Sequence[str]) -> dict[str, Data]:
        if not keys:
            return {}
        client, deadline = self._conn()
        deadline.start()
        with _mapped(self._where):
            found: dict[str, bytes | bytearray]
            if type(client) is Client:
                found = _wire.get_many(client, keys, self._read_limit)
            else:
                found = client.get_many(keys)
            for key, value in list(found.items()):
                if value[:8] == _CHUNK_MAGIC:
                    whole = self._assemble(client, deadline, key, value)
                    if whole is None:
                        del found[key]
                    else:
                        found[key] = whole
            return cast(dict[str, Data], found)

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        self.check_size(value)
        client, deadline = self._conn()
        deadline.start()
        with _mapped(self._where):
            self._set_one(client, deadline, key, value, _expire(expire))

    def _set_one(
        self, client: Client | HashClient, deadline: Deadline, key: str, value: bytes,
        exptime: int,
    ) -> None:
        if len(value) > self._chunk_limit:
            value = _chunks.write(
                client, deadline, key, value, exptime, self._chunk_limit, self._where
            )
        elif type(value) is not bytes:
            value = bytes(value)  # pymemcache would send str(bytearray(...)), not its bytes
        if not client.set(key, value, expire=exptime, noreply=False):
            raise StoreRefused(f"memcached {self._where}: set of {key!r} was not stored")

    def set_many(self, items: Mapping[str, bytes], expire: float = 0) -> None:
        for value in items.values():
            self.check_size(value)
        exptime = _expire(expire)
        client, deadline = self._conn()
        deadline.start()
        small = {k: bytes(v) for k, v in items.items() if len(v) <= self._chunk_limit}
        with _mapped(self._where):
            for key in items.keys() - small.keys():
                self._set_one(client, deadline, key, items[key], exptime)
            failed = client.set_many(small, expire=exptime, noreply=False) if small else []
        if failed:
            raise StoreRefused(f"memcached {self._where}: {len(failed)} values not stored")

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        self._check_unchunked(value)
        client = self._start()
        with _mapped(self._where):
            return bool(client.add(key, bytes(value), expire=_expire(expire), noreply=False))

    def gets(self, key: str) -> tuple[Data | None, Any]:
        client = self._start()
        with _mapped(self._where):
            got = client.gets(key)
            if got is None:  # HashClient's "default value" for a node it gave up on
                raise BackendUnavailable(f"memcached {self._where}: gets of {key!r} got no reply")
            value, token = got
            return value, token

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        self._check_unchunked(value)
        client = self._start()
        with _mapped(self._where):
            result: bool | None = client.cas(
                key, bytes(value), token, expire=_expire(expire), noreply=False
            )
            return result

    def touch(self, key: str, expire: float) -> bool:
        client = self._start()
        with _mapped(self._where):
            return bool(client.touch(key, expire=_expire(expire), noreply=False))

    def incr(self, key: str, delta: int = 1) -> int:
        if delta < 0:
            raise ValueError("memcached counters only grow: delta must be >= 0")
        client = self._start()
        with _mapped(self._where):
            for _ in range(3):
                value = client.incr(key, delta, noreply=False)
                if value is not None:
                    return int(value)
                if client.add(key, str(delta).encode(), noreply=False):
                    return delta
            raise BackendError(f"memcached {self._where}: incr of {key!r} kept racing")

    def delete(self, key: str) -> None:
        client = self._start()
        with _mapped(self._where):
            client.delete(key, noreply=False)

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

    def _assemble(
        self, client: Client | HashClient, deadline: Deadline, key: str,
        manifest: bytes | bytearray,
    ) -> bytearray | None:
        return _chunks.assemble(
            client, deadline, key, manifest, self.max_value_size or self._read_limit,
            self._read_limit,
        )

    # -- administration: see _mcadmin ----------------------------------------------------------
    def probe(self) -> list[tuple[str, str]]:
        return _mcadmin.probe(self)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        return _mcadmin.iter_keys(self, prefix)

    def delete_many(self, keys: Iterable[str]) -> int:
        return _mcadmin.delete_many(self, keys)

    def clear(self, prefix: str | None = None) -> int:
        """``flush_all`` on every node without a prefix; enumerate-and-delete with one."""
        return _mcadmin.clear(self, prefix)

    def server_stats(self) -> dict[str, Any]:
        return _mcadmin.server_stats(self)


_RUNTIME = frozenset({"_local", "_clients", "_clients_lock"})
