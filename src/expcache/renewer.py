"""Keeping stampede leases alive while their holders compute: one thread per process.

A holder's lease (``lease.StoreLease``) expires ``lease_ttl`` after it was taken unless it is
renewed; a computation may take longer, so the renewer rewrites every held lease's deadline a
third of its TTL after it was taken or last renewed. A holder that dies or is stopped renews
nothing and its lease expires; one that finishes unregisters on every exit.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Protocol

from .errors import BackendError

__all__ = ["LeaseRenewer", "renewer"]


class _Renewable(Protocol):
    ttl: float

    def renew(self) -> bool: ...


class LeaseRenewer:
    """Renews held leases from one idle-most-of-the-time daemon thread.

    Each lease is renewed a third of its TTL after it was taken or last renewed; the thread
    sleeps until the earliest renewal is due and is woken only when a new lease falls due
    before that, so a burst of short misses costs no renewal round trips at all. The thread
    stays once started: connections are per thread, so a thread per burst would reconnect
    to every backend each time.
    """

    def __init__(self) -> None:
        self._leases: dict[int, tuple[_Renewable, float]] = {}  # handle -> (lease, due)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next = 0
        self._wake_at = math.inf
        self.renewals = 0  # renewals sent (for tests and benchmarks)
        self._renewed = threading.Condition()

    def hold(self, lease: _Renewable) -> int:
        due = time.monotonic() + lease.ttl / 3
        with self._lock:
            self._next += 1
            self._leases[self._next] = (lease, due)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="expcache-lease-renewer", daemon=True
                )
                self._thread.start()
            elif due < self._wake_at:
                self._wake.notify()
            return self._next

    def release(self, handle: int) -> None:
        with self._lock:
            self._leases.pop(handle, None)

    def wait_renewals(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` renewals were sent in all (tests: no clock polling)."""
        with self._renewed:
            return self._renewed.wait_for(lambda: self.renewals >= n, timeout)

    @property
    def held(self) -> int:
        """How many leases are registered (0 once every holder has finished)."""
        return len(self._leases)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [(h, lease) for h, (lease, at) in self._leases.items() if at <= now]
                for handle, lease in due:
                    self._leases[handle] = (lease, now + lease.ttl / 3)
                if not due:
                    self._wake_at = min((at for _, at in self._leases.values()), default=math.inf)
                    self._wake.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = math.inf
                    continue
            for handle, lease in due:
                # On failure the computation goes on; at worst another worker duplicates it.
                kept = True
                with contextlib.suppress(BackendError):
                    kept = lease.renew()
                with self._renewed:
                    self.renewals += 1
                    self._renewed.notify_all()
                if not kept:  # taken over after we stalled: stop pushing its deadline
                    self.release(handle)


renewer = LeaseRenewer()


def _new_renewer_after_fork() -> None:
    global renewer  # a forked child must not inherit a held lock or the parent's leases
    renewer = LeaseRenewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_renewer_after_fork)
