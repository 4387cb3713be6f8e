"""Stampede leases for stores of one machine: a byte-range file lock, no store round trip.

The disk backend is shared by the processes of one host only, so the lease does not need to
live in the store: taking it as an item (``add``), marking it and deleting it cost three
SQLite commits per miss where the value itself needs one. Instead a miss locks one byte of a
lock file beside the cache (``fcntl.lockf`` at an offset derived from the key, so distinct
keys never contend), computes, stores, and unlocks:

- the kernel drops the lock the instant its holder dies (SIGKILL included), so a waiter
  takes over at once rather than after a TTL;
- POSIX record locks belong to the *process*, so threads of one process are kept apart by an
  in-process table of held offsets (each with an ``Event`` the waiting threads sleep on);
- the lock file is opened once per process and never closed while locks are held (closing any
  descriptor of a file drops all of the process's locks on it); a forked child starts with an
  empty table (it inherits no locks).

A waiter polls the value with backoff and tries the lock; whoever gets the lock looks once
more (the holder stores before it unlocks, and a lookup that missed may predate that) and
either hits or computes itself. A stopped
(SIGSTOP) holder keeps its lock: waiters give up after ``lease_max_wait`` and compute.

``LocalLease`` is the same without the file, for process-local backends (memory): threads
of one process computing the same key wait for the first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Final

import xxhash

from .entries import ValueEntry
from .guard import Guard, Outcome
from .lease import Claim, Decode, Patience

__all__ = ["FileLease", "LocalLease", "lock_file_name"]

lock_file_name: Final = "expcache-leases.lock"
_OFFSET_MASK: Final = (1 << 62) - 1  # well inside off_t; 62 bits: no two keys share a byte


class _Table:
    """This process's held offsets of one lock file (or of no file: ``path is None``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.fd: int | None = None
        self.held: dict[int, threading.Event] = {}
        self.lock = threading.Lock()

    def _descriptor(self) -> int:
        if self.fd is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self.fd

    def try_lock(self, offset: int) -> bool | None:
        """True: taken; False: held by another thread or process; None: cannot lock here."""
        with self.lock:
            if offset in self.held:
                return False
            if self.path is not None:
                try:
                    fcntl.lockf(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        return False
                    return None  # unwritable directory, no locks on this filesystem, ...
            self.held[offset] = threading.Event()
            return True

    def unlock(self, offset: int) -> None:
        with self.lock:
            event = self.held.pop(offset, None)
            if self.path is not None and self.fd is not None:
                with contextlib.suppress(OSError):  # the descriptor is gone: so is the lock
                    fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)
        if event is not None:
            event.set()

    def event(self, offset: int) -> threading.Event | None:
        return self.held.get(offset)



_TABLES: dict[Path | None, _Table] = {}
_TABLES_LOCK = threading.Lock()


def _table(path: Path | None) -> _Table:
    table = _TABLES.get(path)
    if table is None:
        with _TABLES_LOCK:
            table = _TABLES.setdefault(path, _Table(path))
    return table


def _forget_after_fork() -> None:
    # The child holds none of the parent's record locks; its descriptors are the parent's
    # open file descriptions, so they are dropped without closing (a close would be harmless
    # for the parent, but the child must not unlock offsets it never locked).
    _TABLES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class FileLease:
    """A lease on one key: a byte of ``directory/expcache-leases.lock`` (see the docstring)."""

    __slots__ = ("_owned", "decode", "guard", "key", "max_wait", "offset", "seen", "table")

    def __init__(
        self,
        guard: Guard,
        key: str,
        decode: Decode,
        seen: bytes | None = None,
        *,
        directory: Path | None,
        max_wait: float,
    ) -> None:
        self.guard = guard
        self.key = key
        self.decode = decode
        self.seen = seen
        self.max_wait = max_wait
        self.table = _table(None if directory is None else directory / lock_file_name)
        self.offset = xxhash.xxh3_64_intdigest(key.encode()) & _OFFSET_MASK
        self._owned = False

    def acquire(self) -> Claim | ValueEntry:
        got = self.table.try_lock(self.offset)
        if not got:
            return Claim.WAIT if got is False else Claim.NONE
        self._owned = True
        # The lookup that missed may predate a holder that has since stored and unlocked
        # (in this process or another): look once more now that the key is ours. A miss on
        # disk costs ~6 us, a store ~50-90 us: one computation per key is worth it.
        found = self._look()
        if found is not None:
            self.release()
            return found
        return Claim.OWNED

    def _look(self) -> ValueEntry | None:
        data = self.guard.run(self.guard.backend.get, self.key)
        if type(data) is Outcome or data is None or data == self.seen:
            return None
        return self.decode(data)

    def wait(self) -> ValueEntry | Claim:
        guard = self.guard
        patience = Patience(guard.rec, self.max_wait, self.seen, first=0.001, cap=0.1)
        while True:
            data = guard.run(guard.backend.get, self.key)
            if type(data) is Outcome:
                return Claim.FAILED
            if patience.fresh(data):
                entry = self.decode(data)
                if entry is not None:
                    return entry
            got = self.table.try_lock(self.offset)
            if got:
                self._owned = True
                # The holder stores before it unlocks: look once more before computing.
                self.seen = patience.seen
                found = self._look()
                if found is not None:
                    self.release()
                    return found
                return Claim.OWNED
            if got is None or patience.exhausted():
                return Claim.NONE
            patience.pause(self.table.event(self.offset))

    def done(self, stored: bool) -> None:
        self.release()

    def release(self) -> None:
        if self._owned:
            self._owned = False
            self.table.unlock(self.offset)

    abandon = release  # the lock lives in this process: giving it up needs no backend

    def __enter__(self) -> FileLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def LocalLease(
    guard: Guard, key: str, decode: Decode, seen: bytes | None = None, *, max_wait: float
) -> FileLease:
    """A lease between the threads of this process only (process-local backends)."""
    return FileLease(guard, key, decode, seen, directory=None, max_wait=max_wait)
