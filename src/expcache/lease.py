"""Keeping stampede leases alive while their holders compute.

A worker that wins ``<key>:lease`` holds it for ``lease_ttl`` seconds; a computation may take
longer, so one daemon thread per process ``touch``es every held lease a third of its TTL after
it was taken or last renewed. A holder that dies stops being renewed, its lease expires and a
waiter takes over (see ``memoize``). The thread sleeps until the earliest renewal is due and
is woken only when a new lease falls due before that, so a burst of short misses costs no
renewal round trips at all.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time

from .backends.base import Backend
from .errors import BackendError

__all__ = ["LeaseRenewer", "renewer"]


class LeaseRenewer:
    """Renews held leases from one idle-most-of-the-time daemon thread.

    The thread stays once started: connections are per thread, so a thread per burst of
    misses would reconnect to every backend each time.
    """

    def __init__(self) -> None:
        self._leases: dict[int, tuple[Backend, str, float, float]] = {}  # ..., ttl, due
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._next = 0
        self._wake_at = math.inf
        self.renewals = 0  # touches sent (for tests and benchmarks)

    def hold(self, backend: Backend, key: str, ttl: float) -> int:
        due = time.monotonic() + ttl / 3
        with self._lock:
            self._next += 1
            self._leases[self._next] = (backend, key, ttl, due)
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

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [(h, lease) for h, lease in self._leases.items() if lease[3] <= now]
                for handle, (backend, key, ttl, _) in due:
                    self._leases[handle] = (backend, key, ttl, now + ttl / 3)
                if not due:
                    self._wake_at = min((lease[3] for lease in self._leases.values()),
                                        default=math.inf)
                    self._wake.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = math.inf
                    continue
            for _, (backend, key, ttl, _) in due:
                # On failure the computation goes on; at worst another worker duplicates it.
                with contextlib.suppress(BackendError):
                    backend.touch(key, ttl)
                self.renewals += 1


renewer = LeaseRenewer()


def _new_renewer_after_fork() -> None:
    global renewer  # a forked child must not inherit a held lock or the parent's leases
    renewer = LeaseRenewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_renewer_after_fork)
