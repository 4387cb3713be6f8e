"""Per-run measurements of ``CachedUtility`` that the ledger's counters do not carry.

The ``RunLedger`` sums every process's ``CacheStats`` (so ``failed`` is exact across joblib
workers); what it cannot carry is the first error's *message* and the wall time spent in
cached calls (what "time saved" is measured from). This module keeps both per process, with
the ledger's own approach: the owner in memory, each worker overwriting one fixed-size record
in the ledger's directory after every call, so a SIGKILLed worker's completed calls are on
record. No pyDVL import: it is plain bookkeeping.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..ledger import RunLedger

__all__ = ["UtilityReport", "forget_run", "process_log", "read_report"]

@dataclass(frozen=True)
class UtilityReport:
    """What the ledger's counters do not carry, summed over every process of the run.

    ``call_seconds``: wall time spent inside cached evaluations (hits, misses and failures:
    lookups, stores and computing), measured around each call; with the counters'
    ``compute_seconds`` and ``saved_seconds`` it gives the time the cache saved or cost.
    ``first_error``: the first failed evaluation's message (``Type: message``), if any.
    ``complete``: every process that evaluated could be read.
    """

    call_seconds: float = 0.0
    first_error: str | None = None
    complete: bool = True


_SIDECAR = struct.Struct("<8sd")
_SIDECAR_MAGIC = b"XCUTIL01"
_SIDECAR_SUFFIX = ".xcutil"
_ERROR_SUFFIX = ".xcerror"
_MAX_ERROR = 2000


class _ProcessLog:
    """This process's share of a run's report: time in calls, the first error.

    In the process that owns the run it stays in memory; a worker process overwrites one
    fixed-size record in the ledger's directory after every call (one ``pwrite``, like the
    ledger's own snapshots: a SIGKILLed worker's last completed call is on record) and writes
    its first error once. Where the directory does not exist (a worker on another host), the
    first error is logged there and the report says it is incomplete.
    """

    def __init__(self, ledger: RunLedger) -> None:
        self.pid = os.getpid()
        self.is_owner = self.pid == ledger.owner_pid
        self.directory = Path(ledger.directory)
        self.name = f"{socket.gethostname()}-{self.pid}-{uuid.uuid4().hex[:8]}"
        self.call_seconds = 0.0
        self.first_error: str | None = None
        self.fd: int | None = None
        self.lost = False
        self.lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self.lock:
            self.call_seconds += seconds
            total = self.call_seconds
        if self.is_owner or self.lost:
            return
        try:
            if self.fd is None:
                self.fd = os.open(
                    self.directory / f"{self.name}{_SIDECAR_SUFFIX}",
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                    0o600,
                )
            os.pwrite(self.fd, _SIDECAR.pack(_SIDECAR_MAGIC, total), 0)
        except OSError:
            self.lost = True  # the ledger's own channel reports the counters regardless

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def failed(self, exc: BaseException) -> bool:
        """Record ``exc``; True if it is this process's first failure."""
        text = f"{type(exc).__name__}: {exc}".strip()[:_MAX_ERROR]
        with self.lock:
            if self.first_error is not None:
                return False
            self.first_error = text
        if not self.is_owner:
            try:
                path = self.directory / f"{self.name}{_ERROR_SUFFIX}"
                path.write_text(text, encoding="utf-8")
            except OSError:
                self.lost = True
        return True


_LOGS: dict[tuple[str, int], _ProcessLog] = {}
_LOGS_LOCK = threading.Lock()


_MAX_LOGS = 8  # a long-lived worker serves many runs: older runs' records are complete


def process_log(ledger: RunLedger, pid: int | None = None) -> _ProcessLog:
    """This process's log of ``ledger``'s run; ``pid``: this process's id when the caller
    already knows it (a hot path that tracks forks itself saves the ``getpid`` syscall)."""
    key = (ledger.run_id, os.getpid() if pid is None else pid)
    found = _LOGS.get(key)
    if found is None:
        with _LOGS_LOCK:
            found = _LOGS.get(key)
            if found is None:
                for old in list(_LOGS)[: max(0, len(_LOGS) - _MAX_LOGS)]:
                    _LOGS.pop(old).close()
                found = _LOGS[key] = _ProcessLog(ledger)
    return found


def forget_run(ledger: RunLedger) -> None:
    """Drop this process's report of ``ledger``'s run (the owner, once it has read it)."""
    with _LOGS_LOCK:
        found = _LOGS.pop((ledger.run_id, os.getpid()), None)
    if found is not None:
        found.close()


def read_report(ledger: RunLedger) -> UtilityReport:
    """The owner's in-memory share plus every worker's record in the ledger directory."""
    own = _LOGS.get((ledger.run_id, os.getpid()))
    seconds = own.call_seconds if own is not None else 0.0
    errors: list[tuple[float, str]] = []
    if own is not None and own.first_error is not None:
        errors.append((0.0, own.first_error))
    complete = True
    directory = Path(ledger.directory)
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{_SIDECAR_SUFFIX}")):
            data = path.read_bytes()
            if len(data) != _SIDECAR.size or data[:8] != _SIDECAR_MAGIC:
                complete = False
                continue
            seconds += _SIDECAR.unpack(data)[1]
        for path in directory.glob(f"*{_ERROR_SUFFIX}"):
            try:
                errors.append((path.stat().st_mtime, path.read_text(encoding="utf-8")))
            except OSError:
                complete = False
    errors.sort(key=lambda e: e[0])
    return UtilityReport(seconds, errors[0][1] if errors else None, complete)
