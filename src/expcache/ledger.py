"""Run-scoped cache statistics that include what worker processes did.

A memoized function copied into a joblib/loky worker counts its hits and misses in the worker;
the parent's ``stats`` never see them. pyDVL makes this worse: it pickles the utility into
*every task*, and when its stopping criterion fires it abandons the parallel generator, which
kills the workers (``abort_everything``) while their last tasks are still running. So neither
"send the counts back with the result" (pyDVL owns the results) nor "flush at the end"
(there is no end hook, and the process may be SIGKILLed) gives exact numbers.

What this module does instead: every process that evaluates for a run keeps one running
``CacheStats`` total and *overwrites* a fixed-size snapshot of it after every call, so a
completed call is on record before it returns to pyDVL, and a snapshot is idempotent (a late
or repeated write can only lag, never double count). The parent sums its own in-memory total
and every worker's last snapshot. Channels:

- ``file`` (default on one host): one file per worker process in the run's ledger directory,
  written with a single ``pwrite`` (~2 µs). Data written to the page cache survives a SIGKILL
  of the writer, and any backend works, including ``memory`` and ``none``.
- ``backend``: for workers on other hosts (the directory does not exist there), one slot per
  worker process under run-scoped keys of a shared cache backend, allocated with the
  backend's atomic ``incr`` and overwritten with ``set`` (one round trip per call).

A worker whose channel fails keeps computing; the failure is logged once and the parent's
``complete`` flag tells the summary that some counts may be missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
import uuid
import weakref
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from . import _validate
from .backends.base import Backend
from .errors import BackendError, ConfigError
from .memoize import Memoized
from .stats import CacheStats

__all__ = ["CHANNELS", "Channel", "RunLedger", "check_channel"]

log = logging.getLogger("expcache")

Channel = Literal["auto", "file", "backend"]
CHANNELS: tuple[Channel, ...] = ("auto", "file", "backend")
_FIELDS = tuple(f.name for f in fields(CacheStats))
_HEAD = struct.Struct("<8sI")
_MAGIC = b"XCLEDG01"
_BODY = struct.Struct(f"<{len(_FIELDS)}d")
_SNAPSHOT_SIZE = _HEAD.size + _BODY.size
_SLOT_TTL = 7 * 86400  # run-scoped backend keys outlive any sane run, then go away


def check_channel(channel: Any, backend: Backend | None = None) -> Channel:
    """The one rule for ``stats_channel``: callers that configure a ledger before building it
    (the Hydra app, at plan time) run it early; ``RunLedger`` runs it again on construction."""
    _validate.choice("stats_channel", channel, CHANNELS)
    if channel == "backend" and backend is not None and not backend.shared:
        raise ConfigError(
            param="stats_channel",
            value=channel,
            expected="'file' or 'auto' with a backend other processes cannot see",
            hint=f"'backend' needs a shared cache backend (disk or memcached), got {backend!r}",
        )
    return channel  # type: ignore[no-any-return]


def _pack(stats: CacheStats) -> bytes:
    return _HEAD.pack(_MAGIC, len(_FIELDS)) + _BODY.pack(*(getattr(stats, f) for f in _FIELDS))


def _unpack(data: bytes) -> CacheStats | None:
    if len(data) != _SNAPSHOT_SIZE:
        return None
    magic, n = _HEAD.unpack_from(data)
    if magic != _MAGIC or n != len(_FIELDS):
        return None
    values = _BODY.unpack_from(data, _HEAD.size)
    out = CacheStats()
    for name, value in zip(_FIELDS, values, strict=True):
        setattr(out, name, type(getattr(out, name))(value))
    return out


class _FileSink:
    def __init__(self, directory: Path) -> None:
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.stats"
        self.fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        os.pwrite(self.fd, data, 0)


class _BackendSink:
    def __init__(self, backend: Backend, run_id: str) -> None:
        slot = backend.incr(_count_key(run_id), 1)
        self.backend = backend
        self.key = _slot_key(run_id, slot)

    def write(self, data: bytes) -> None:
        self.backend.set(self.key, data, _SLOT_TTL)


def _count_key(run_id: str) -> str:
    return f"xcledger:{run_id}:n"


def _slot_key(run_id: str, slot: int) -> str:
    return f"xcledger:{run_id}:{slot}"


class _ProcessPart:
    """This process's share of one run: the memoizers evaluating for it, and their sink.

    All copies of a utility unpickled in one process (pyDVL ships one per task) share one
    ``Memoized`` per signature, so the process total is a sum over a handful of objects and
    the memoizer's own lock keeps it exact under the threading backend too. It holds the
    ledger's settings, not the ledger, so the owner's ledger can be garbage collected.
    """

    def __init__(self, ledger: RunLedger) -> None:
        self.pid = os.getpid()
        self.run_id = ledger.run_id
        self.is_owner = self.pid == ledger.owner_pid
        self.spec = (ledger.directory, ledger.channel, ledger.backend)
        self.memos: dict[bytes, Memoized[Any, Any]] = {}
        self.sink: _FileSink | _BackendSink | None = None
        self.failures = 0
        self.lock = threading.Lock()

    def memo(self, signature: bytes, candidate: Memoized[Any, Any]) -> Memoized[Any, Any]:
        with self.lock:
            return self.memos.setdefault(signature, candidate)

    def total(self) -> CacheStats:
        return sum((m.stats for m in list(self.memos.values())), CacheStats())

    def _snapshot(self) -> bytes:
        memos = list(self.memos.values())
        if len(memos) == 1:  # the common case, on the hot path: no intermediate objects
            stats = memos[0].stats
            return _HEAD.pack(_MAGIC, len(_FIELDS)) + _BODY.pack(
                *[getattr(stats, f) for f in _FIELDS]
            )
        return _pack(self.total())

    def publish(self) -> None:
        """Record this process's running total (workers only; the owner is read in memory).

        A failed write is retried on the next call: snapshots are cumulative, so one that
        gets through repairs every earlier loss.
        """
        if self.is_owner:
            return
        try:
            if self.sink is None:
                self.sink = _open_sink(self.run_id, *self.spec)
            elif isinstance(self.sink, _BackendSink) and not self.sink.backend.breaker.allow():
                return
            self.sink.write(self._snapshot())
        except (OSError, BackendError) as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "expcache: run %s: cannot record worker %d's cache statistics (%s); "
                    "retrying with every call",
                    self.run_id,
                    self.pid,
                    exc,
                )

    def close(self) -> None:
        if isinstance(self.sink, _FileSink):
            os.close(self.sink.fd)
        self.sink = None


def _open_sink(
    run_id: str, directory: Path, channel: Channel, backend: Backend | None
) -> _FileSink | _BackendSink:
    if channel != "backend" and directory.is_dir():
        return _FileSink(directory)
    if channel == "file":
        raise OSError(f"ledger directory {directory} does not exist on this host")
    if backend is None or backend.scope != "network":
        # a disk cache is this host's own: counts written there never reach the owner
        raise OSError(
            f"ledger directory {directory} does not exist on this host and the cache "
            f"backend {backend!r} is not shared between hosts"
        )
    return _BackendSink(backend, run_id)


def _release(run_id: str, pid: int, temporary: Path | None) -> None:
    """Forget the owner's share of a run (and its temporary directory)."""
    with _PARTS_LOCK:
        part = _PARTS.get(run_id)
        if part is not None and part.pid == pid:
            del _PARTS[run_id]
            part.close()
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)


_PARTS: dict[str, _ProcessPart] = {}
_PARTS_LOCK = threading.Lock()


def _forget_parent_counts() -> None:
    """In a forked child: the memoizers it inherits carry the parent's counters, which the
    parent reports itself; counted again in the child's snapshot, the run would count those
    calls twice. The child starts them from zero. Its locks are new ones: a lock that another
    parent thread held at the fork would never be released here (``Recorder`` does the same
    for the counters' own locks)."""
    global _PARTS_LOCK
    _PARTS_LOCK = threading.Lock()
    for part in list(_PARTS.values()):
        part.lock = threading.Lock()
        for memo in list(part.memos.values()):
            memo.stats.reset()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_parent_counts)
# A long-lived worker serves many runs; older runs' shares are dropped (their last snapshot is
# already written, and a run that comes back starts a new snapshot file, so sums stay exact).
_MAX_WORKER_PARTS = 8


def _evict_old_parts() -> None:
    pid = os.getpid()
    stale = [k for k, p in _PARTS.items() if p.pid != pid or not p.is_owner]
    for key in stale[: max(0, len(stale) - _MAX_WORKER_PARTS)]:
        _PARTS.pop(key).close()


class RunLedger:
    """The cache statistics of one run, summed over every process that evaluated for it.

    Create it in the parent; it travels into workers by pickling (as part of the wrapped
    utility) and only there decides how to report. ``collect()`` in the parent returns the
    total. The ledger directory is temporary unless ``directory`` is given, and is removed by
    ``close()`` or when the owner's ledger is garbage collected.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        channel: Channel = "auto",
        run_id: str | None = None,
    ) -> None:
        check_channel(channel, backend)
        if channel == "backend" and backend is None:
            raise ConfigError(
                param="stats_channel",
                value=channel,
                expected="'file' or 'auto' without a cache backend",
                hint="'backend' needs a shared cache backend (disk or memcached)",
            )
        self.run_id = run_id or uuid.uuid4().hex
        self.owner_pid = os.getpid()
        self.backend = backend
        self.channel = channel
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix=f"expcache-ledger-{self.run_id[:8]}-"))
            temporary: Path | None = self.directory
        else:
            self.directory = Path(directory)
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = None
        # The owner's share (memoizers holding the data) and a temporary directory go when
        # the last copy of the utility does, or at close().
        self._cleanup: weakref.finalize[[str, int, Path | None], RunLedger] | None = weakref.finalize(
            self, _release, self.run_id, self.owner_pid, temporary
        )

    # -- pickling: workers get a reference, never the ownership of the directory ------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "owner_pid": self.owner_pid,
            "backend": self.backend,
            "channel": self.channel,
            "directory": str(self.directory),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.directory = Path(state["directory"])
        self._cleanup = None

    # -- this process -------------------------------------------------------------------------
    def part(self) -> _ProcessPart:
        """This process's share (a forked child starts its own, it does not inherit counts)."""
        part = _PARTS.get(self.run_id)
        if part is None or part.pid != os.getpid():
            with _PARTS_LOCK:
                part = _PARTS.get(self.run_id)
                if part is None or part.pid != os.getpid():
                    _evict_old_parts()
                    part = _PARTS[self.run_id] = _ProcessPart(self)
        return part

    # -- the parent's view --------------------------------------------------------------------
    def worker_stats(self) -> tuple[CacheStats, int, bool]:
        """Sum of the workers' last snapshots, how many processes reported, and whether every
        snapshot could be read."""
        total = CacheStats()
        count = 0
        complete = True
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.stats")):
                stats = _unpack(path.read_bytes())
                if stats is None:
                    complete = False
                    continue
                total += stats
                count += 1
        if self.backend is not None and self.backend.shared and self.channel != "file":
            try:
                raw = self.backend.get(_count_key(self.run_id))
                slots = int(raw) if raw else 0
                if slots:
                    keys = [_slot_key(self.run_id, i) for i in range(1, slots + 1)]
                    found = self.backend.get_many(keys)
                    complete = complete and len(found) == slots
                    for data in found.values():
                        stats = _unpack(data)
                        if stats is None:
                            complete = False
                            continue
                        total += stats
                        count += 1
            except (BackendError, ValueError) as exc:
                log.warning("expcache: run %s: cannot read worker statistics: %s", self.run_id, exc)
                complete = False
        return total, count, complete

    def local_stats(self) -> CacheStats:
        """What this process's memoizers did for the run."""
        part = _PARTS.get(self.run_id)
        if part is None or part.pid != os.getpid():
            return CacheStats()
        return part.total()

    def collect(self) -> CacheStats:
        """The run's total: this process plus every worker's last snapshot."""
        workers, _, _ = self.worker_stats()
        return self.local_stats() + workers

    def close(self) -> None:
        """Forget this process's share and remove a temporary ledger directory."""
        if self._cleanup is not None:
            self._cleanup()
        else:  # a worker's copy: drop this process's share only
            _release(self.run_id, os.getpid(), None)

    def __repr__(self) -> str:
        return f"RunLedger(run_id={self.run_id!r}, directory={str(self.directory)!r})"
