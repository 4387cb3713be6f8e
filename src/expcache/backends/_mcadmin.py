"""Operating a memcached store: enumerate, delete by prefix, statistics, start-up probes.

memcached has no "keys matching" command; ``lru_crawler metadump hash`` (memcached >= 1.6; a
walk of the LRUs, ``metadump all``, on older servers) streams every live item, so
enumeration asks **every node** of a cluster, over a
connection of its own (a dump is long; the thread's connection stays free for other work, a
consumer may delete while it iterates). Each node's dump runs under the backend's ``timeout``
per line, not per dump: a dump grows with the store.

A prefix clear enumerates each node and deletes what it found there, in pipelined batches,
entries before their chunks and leases. It is neither atomic nor a snapshot. A concurrent
reader sees each entry either whole (not deleted yet) or missing (a miss: it recomputes);
never a partial value, as a chunked value whose manifest or any chunk is gone is a miss. An
entry stored under the prefix while the clear runs may survive it, and a deleted lease lets a
waiting worker compute the value itself (a second computation, not a wrong value). Only
``clear()`` without a prefix uses ``flush_all``, which empties the whole server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pymemcache.client.base import Client

from ..errors import BackendError, BackendUnavailable
from . import _bulk, _wire
from ._mcsettings import translate
from .base import PROBE_KEY, _aux_last

if TYPE_CHECKING:
    from .memcached import MemcachedBackend

__all__ = ["CrawlerBusy", "clear", "delete_many", "iter_keys", "probe", "server_stats"]

_BUSY_TRIES = 20  # another crawl (a colleague's `expcache cache ls`) finishes within ~1 s
_STATS = (
    "version", "uptime", "curr_items", "total_items", "bytes", "limit_maxbytes",
    "get_hits", "get_misses", "get_expired", "evictions", "reclaimed", "expired_unfetched",
    "evicted_unfetched", "cmd_get", "cmd_set", "curr_connections",
)  # fmt: skip


def _name(server: tuple[str, int]) -> str:
    return f"{server[0]}:{server[1]}"


class CrawlerBusy(Exception):
    """Another ``lru_crawler`` request is running on the server: ask again shortly."""


class _NoHashDump(Exception):
    """The server predates ``lru_crawler metadump hash``: walk its LRUs instead."""


# ``hash`` walks the hash table: every live item exactly once. ``all`` walks the LRUs, and an
# item the LRU maintainer moves between segments during the walk (a fresh item leaving HOT)
# can be missed: a prefix clear of a just-written entry left it behind (seen in the tests).
# So ``all`` is only the fallback for servers older than 1.6, and then repeated by ``clear``.
_MODES = (b"hash", b"all")
_LRU_PASSES = 3


def _metadump(
    client: Client, prefix: str, now: float, progress: Callable[[], None], mode: bytes = b"hash"
) -> Iterator[str]:
    """``lru_crawler metadump hash|all``: the server's live keys starting with ``prefix``.

    memcached streams one ``key=<url-encoded> exp=<unix time or -1> ...`` line per item in
    its LRUs (``\\n``-terminated, then ``END\\r\\n``); items past their expiry time are skipped
    here too. ``progress`` runs after each whole line: a dump grows with the store, so the
    deadline bounds the wait for the next line, not the whole dump.
    """
    sock = _wire.connected(client)
    try:
        sock.sendall(b"lru_crawler metadump " + mode + b"\r\n")
        reader = _wire.Reader(sock)
        first = True
        while True:
            line = reader.line(b"\n")
            if line in (b"END\r", b"END"):
                if not reader.drained:
                    raise _wire.ProtocolError("bytes after the end of the dump")
                return
            if not line.startswith(b"key="):
                if line.startswith(b"BUSY"):
                    raise CrawlerBusy(line.decode("ascii", "replace"))
                if first and mode == b"hash" and line.startswith((b"CLIENT_ERROR", b"ERROR")):
                    raise _NoHashDump(line.decode("ascii", "replace"))
                raise _wire.fail(line.rstrip(b"\r"))
            first = False
            progress()
            fields = dict(f.split(b"=", 1) for f in line.split() if b"=" in f)
            exp = fields.get(b"exp", b"-1")
            if exp != b"-1" and exp.isdigit() and int(exp) <= now:
                continue
            key = unquote(fields[b"key"].decode("ascii", "replace"))
            if key.startswith(prefix):
                yield key
    except BaseException:
        client.close()
        raise


def probe(backend: MemcachedBackend) -> list[tuple[str, str]]:
    """One ``get`` per node with the backend's own settings (TLS included); never raises."""
    failures = []
    for server in backend.servers:
        client: Client | None = None
        try:
            client, deadline = backend._node(server)
            deadline.start()
            _wire.get(client, PROBE_KEY, backend._read_limit)
        except Exception as exc:
            failures.append((_name(server), str(translate(exc, _name(server)))))
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
    return failures


def _node_keys(
    backend: MemcachedBackend, server: tuple[str, int], prefix: str, mode: bytes = b"hash"
) -> Iterator[str]:
    client, deadline = backend._node(server)
    try:
        for attempt in range(_BUSY_TRIES):
            deadline.start()
            try:
                yield from _metadump(client, prefix, time.time(), deadline.start, mode)
                return
            except _NoHashDump:
                client.close()
                yield from _node_keys(backend, server, prefix, b"all")
                return
            except CrawlerBusy as exc:
                if attempt == _BUSY_TRIES - 1:
                    raise BackendError(
                        f"memcached {_name(server)}: the LRU crawler stayed busy ({exc}); "
                        "another enumeration is running, try again"
                    ) from exc
                time.sleep(0.01 * (attempt + 1))
    except Exception as exc:
        raise translate(exc, _name(server)) from exc
    finally:
        client.close()


def iter_keys(backend: MemcachedBackend, prefix: str) -> Iterator[str]:
    for server in backend.servers:
        yield from _node_keys(backend, server, prefix)


def delete_many(backend: MemcachedBackend, keys: Iterable[str]) -> int:
    """Each key deleted on the node the thread's ring sends it to, a batch per round trip."""
    client, deadline = backend._conn()
    keys = list(keys)
    try:
        if type(client) is Client:
            return _bulk.delete_many(client, keys, deadline.start)
        groups: dict[str, list[str]] = {}
        for key in keys:
            node = client.hasher.get_node(key)
            if node is None:
                raise BackendUnavailable(f"memcached {backend.where}: every node is down")
            groups.setdefault(node, []).append(key)
        return sum(
            _bulk.delete_many(client.clients[node], group, deadline.start)
            for node, group in groups.items()
        )
    except Exception as exc:
        raise translate(exc, backend.where) from exc


def clear(backend: MemcachedBackend, prefix: str | None) -> int:
    """Every node, even when one fails (then raised, naming all that failed, at the end)."""
    removed = 0
    failed: list[tuple[str, BackendError]] = []
    for server in backend.servers:
        try:
            if prefix is None:
                removed += _flush(backend, server)
                continue
            # Until a walk finds nothing left (one walk of the hash table suffices; the LRU
            # walk of old servers may miss items that move meanwhile, so it is repeated).
            for _ in range(_LRU_PASSES):
                keys = sorted(_node_keys(backend, server, prefix), key=_aux_last)
                if not keys:
                    break
                client, deadline = backend._node(server)
                try:
                    removed += _bulk.delete_many(client, keys, deadline.start)
                finally:
                    client.close()
        except Exception as exc:
            failed.append((_name(server), translate(exc, _name(server))))
    if failed:
        names = ", ".join(name for name, _ in failed)
        error = failed[0][1]
        raise type(error)(f"memcached clear failed on {names}: {error}") from error
    return removed


def _flush(backend: MemcachedBackend, server: tuple[str, int]) -> int:
    client, deadline = backend._node(server)
    try:
        deadline.start()
        items = int(client.stats().get(b"curr_items", 0))
        deadline.start()
        client.flush_all(noreply=False)
        return items
    finally:
        client.close()


def _plain(value: Any) -> Any:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def server_stats(backend: MemcachedBackend) -> dict[str, Any]:
    """Per node: memcached's own counters and ``item_size_max``; totals over the nodes."""
    nodes: dict[str, dict[str, Any]] = {}
    for server in backend.servers:
        client, deadline = backend._node(server)
        try:
            deadline.start()
            stats = client.stats()
            deadline.start()
            settings = client.stats("settings")
            node = {name: _plain(stats[name.encode()]) for name in _STATS if name.encode() in stats}
            node["item_size_max"] = _plain(settings.get(b"item_size_max"))
            nodes[_name(server)] = node
        except Exception as exc:
            nodes[_name(server)] = {"error": str(translate(exc, _name(server)))}
        finally:
            client.close()
    alive = [node for node in nodes.values() if "error" not in node]
    if not alive:
        first = next(iter(nodes.values()))["error"]
        raise BackendUnavailable(f"memcached {backend.where}: no node answered ({first})")
    return {
        "backend": backend.name,
        "items": sum(int(node.get("curr_items", 0)) for node in alive),
        "bytes": sum(int(node.get("bytes", 0)) for node in alive),
        "limit_maxbytes": sum(int(node.get("limit_maxbytes", 0)) for node in alive),
        "nodes": nodes,
    }
