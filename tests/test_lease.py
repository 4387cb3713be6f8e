"""The lease renewer: renews long computations, costs nothing for short ones."""

from __future__ import annotations

import threading

from expcache.backends import MemoryBackend
from expcache.lease import LeaseRenewer


class _TouchRecorder(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.touched = threading.Event()
        self.keys: list[str] = []

    def touch(self, key: str, expire: float) -> bool:
        self.keys.append(key)
        self.touched.set()
        return super().touch(key, expire)


def test_a_long_computation_is_renewed() -> None:
    renewer = LeaseRenewer()
    backend = _TouchRecorder()
    backend.add("k:lease", b"token", 0.3)
    handle = renewer.hold(backend, "k:lease", 0.3)
    assert backend.touched.wait(10), "the lease was never renewed"
    renewer.release(handle)
    assert backend.keys[0] == "k:lease"


def test_short_computations_send_no_renewals() -> None:
    renewer = LeaseRenewer()
    backend = _TouchRecorder()
    long_held = renewer.hold(backend, "slow:lease", 60.0)  # the thread now sleeps ~20 s
    for i in range(200):  # each due in 20 s, released at once: nothing to wake up for
        renewer.release(renewer.hold(backend, f"k{i}:lease", 60.0))
    renewer.release(long_held)
    assert renewer.renewals == 0
    assert backend.keys == []


def test_an_earlier_due_lease_wakes_the_thread() -> None:
    renewer = LeaseRenewer()
    backend = _TouchRecorder()
    renewer.hold(backend, "slow:lease", 600.0)  # sleeping for 200 s
    handle = renewer.hold(backend, "fast:lease", 0.3)  # due in 0.1 s: must wake it
    assert backend.touched.wait(10)
    renewer.release(handle)
    assert backend.keys[0] == "fast:lease"
