"""Stampede leases on a shared store: one computation per cold key across workers.

On a miss, a worker ``add``s ``<key>:lease`` (atomic: only one worker succeeds) and computes;
the others wait for the value, polling the value and the lease together with backoff. The
protocol is one object per miss (``StoreLease``) with one exit for every path: the holder
``done(stored)`` after storing (or deciding not to), and ``release()`` runs on *every* exit,
``BaseException`` included (``with lease:``), so no exception, interrupt or failed store can
leave a lease behind to make others wait.

A lease value is parseable and self-describing::

    b"XL2" | state (H holding, S stored, U unstored) | token (8) | deadline (f64, wall clock)
           | [HMAC-SHA256 over key + the above, first 16 bytes, when signing is on]

A waiter treats a lease it cannot parse (garbage, another program's item, wrong HMAC) or
whose deadline has passed (plus a grace of one TTL for clock skew between hosts) as expired
and takes it over with ``gets``/``cas``: a foreign item without expiry can no longer make
every cold call wait ``lease_max_wait``. The holder keeps its lease alive through the
process-wide renewer thread, which rewrites the deadline (``gets``/``cas``, so a lease taken
over meanwhile is not clobbered) a third of a TTL after each renewal. A holder that dies or
is stopped renews nothing: its lease expires after ``lease_ttl``.

``S`` (stored) is left behind rather than deleting the lease so that a worker whose lookup
missed just before the store finds the lease taken and then the value, instead of winning a
fresh lease and computing a second time; ``U`` (the holder will not store: too fast, too
large) sends the waiters to compute at once instead of queueing.
"""

from __future__ import annotations

import enum
import hmac
import math
import os
import random
import struct
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from . import renewer as _renewer
from .entries import ValueEntry
from .guard import Guard, Outcome
from .stats import Recorder

__all__ = ["Claim", "Decode", "Lease", "NoLease", "StoreLease", "abandoned"]

_MAGIC: Final = b"XL2"
HOLDING: Final = b"H"
STORED: Final = b"S"
UNSTORED: Final = b"U"
_BODY: Final = struct.Struct("<3sc8sd")
_MAC: Final = 16


class _Abandoned:
    """Leases this process gave up but could not remove (the backend failed meanwhile).

    Another process waits for such a lease at most ``lease_ttl`` (it is no longer renewed);
    a later call of this process recognises its own token and takes the lease over at once,
    instead of waiting for itself.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.tokens: dict[str, bytes] = {}
        self.limit = limit
        self.lock = threading.Lock()

    def add(self, lease_key: str, token: bytes) -> None:
        with self.lock:
            self.tokens[lease_key] = token
            while len(self.tokens) > self.limit:
                self.tokens.pop(next(iter(self.tokens)))

    def discard(self, lease_key: str) -> None:
        if self.tokens:
            with self.lock:
                self.tokens.pop(lease_key, None)

    def __contains__(self, item: tuple[str, bytes]) -> bool:
        return self.tokens.get(item[0]) == item[1]


abandoned = _Abandoned()


class Patience:
    """A waiter's loop state: jittered, growing pauses, bounded by ``max_wait``, and counted
    once in ``stats.lease_waits`` (a call that slept at least once), and the entry bytes it
    has already decoded (a bad entry is counted once, however often it is read again)."""

    __slots__ = ("cap", "delay", "give_up", "rec", "seen", "waited")

    def __init__(
        self, rec: Recorder, max_wait: float, seen: bytes | None, *, first: float, cap: float
    ) -> None:
        self.rec = rec
        self.give_up = time.monotonic() + max_wait
        self.seen = seen
        self.delay = first
        self.cap = cap
        self.waited = False

    def fresh(self, data: bytes | None) -> bool:
        """Whether ``data`` is an entry not decoded yet (and note it as seen)."""
        if data is None or data == self.seen:
            return False
        self.seen = data
        return True

    def exhausted(self) -> bool:
        return time.monotonic() >= self.give_up

    def pause(self, event: threading.Event | None = None) -> None:
        if not self.waited:
            self.waited = True
            self.rec.add(lease_waits=1)
        pause = self.delay * (0.5 + random.random())
        if event is not None:  # a thread of this process holds it: wake when it is done
            event.wait(pause)
        else:
            time.sleep(pause)
        self.delay = min(self.delay * 1.5, self.cap)


class Claim(enum.Enum):
    """What a miss may do about computing its key."""

    OWNED = "owned"  # this call computes and stores
    WAIT = "wait"  # another worker computes: wait for its value
    NONE = "none"  # no lease (off, refused, gave up waiting): compute; store if possible
    FAILED = "failed"  # the backend failed: compute and leave the backend alone this call


Decode = Callable[[bytes], ValueEntry | None]


class Lease(Protocol):
    """One miss's claim on a key (see the module docstring).

    Built with the miss's ``decode`` (verified value entry or None, counting bad ones) and
    the entry bytes its lookup already saw (decoded once, never counted twice).
    ``acquire``/``wait`` may find the value after all (another worker stored it).
    """

    def acquire(self) -> Claim | ValueEntry: ...

    def wait(self) -> ValueEntry | Claim: ...

    def done(self, stored: bool) -> None: ...

    def release(self) -> None: ...

    def abandon(self) -> None: ...

    def __enter__(self) -> Lease: ...

    def __exit__(self, *exc: object) -> None: ...


class NoLease:
    """The lease of a call that needs none: every method is a no-op."""

    __slots__ = ()

    def acquire(self) -> Claim | ValueEntry:
        return Claim.NONE

    def wait(self) -> ValueEntry | Claim:
        return Claim.NONE

    def done(self, stored: bool) -> None:
        pass

    def release(self) -> None:
        pass

    def abandon(self) -> None:
        pass

    def __enter__(self) -> NoLease:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


NO_LEASE: Final = NoLease()


class StoreLease:
    """A lease held as an item of the store itself (memcached, or any backend with ``add``,
    ``gets`` and ``cas``)."""

    __slots__ = (
        "_held", "decode", "guard", "key", "lease_key", "max_wait", "seen", "signing_key",
        "token", "ttl",
    )

    def __init__(
        self,
        guard: Guard,
        key: str,
        decode: Decode,
        seen: bytes | None = None,
        *,
        ttl: float,
        max_wait: float,
        signing_key: bytes | None,
    ) -> None:
        self.guard = guard
        self.key = key
        self.decode = decode
        self.seen = seen
        self.lease_key = f"{key}:lease"
        self.ttl = ttl
        self.max_wait = max_wait
        self.signing_key = signing_key
        self.token = os.urandom(8)
        self._held = 0  # renewer handle while this call holds the lease

    # -- the lease value -------------------------------------------------------------------
    def value(self, state: bytes) -> bytes:
        body = _BODY.pack(_MAGIC, state, self.token, time.time() + self.ttl)
        if self.signing_key is None:
            return body
        return body + self._mac(body)

    def _mac(self, body: bytes) -> bytes:
        assert self.signing_key is not None
        message = self.lease_key.encode() + body
        return hmac.new(self.signing_key, message, "sha256").digest()[:_MAC]

    def parse(self, data: bytes) -> tuple[bytes, bytes, float] | None:
        """(state, token, deadline) of a lease value, or None if it is not one of ours."""
        size = _BODY.size + (0 if self.signing_key is None else _MAC)
        if len(data) != size:
            return None
        body = bytes(data[: _BODY.size])
        if self.signing_key is not None and not hmac.compare_digest(
            bytes(data[_BODY.size :]), self._mac(body)
        ):
            return None
        magic, state, token, deadline = _BODY.unpack(body)
        if magic != _MAGIC or state not in (HOLDING, STORED, UNSTORED) or not math.isfinite(
            deadline
        ):
            return None
        return state, token, deadline

    def _expired(self, data: bytes) -> bool:
        parsed = self.parse(data)
        if parsed is None:
            return True
        state, token, deadline = parsed
        return state == HOLDING and (
            time.time() > deadline + self.ttl or (self.lease_key, token) in abandoned
        )

    # -- protocol ----------------------------------------------------------------------------
    def acquire(self) -> Claim:
        """``add`` the lease: only one worker wins. (The ``S`` marker a holder leaves makes a
        late ``add`` fail, so a worker that missed just before the store waits and hits.)"""
        got = self.guard.run(
            self.guard.backend.add, self.lease_key, self.value(HOLDING), self.ttl
        )
        if got is True:
            self._hold()
            return Claim.OWNED
        if got is False:
            return Claim.WAIT
        return Claim.FAILED if got is Outcome.FAILED else Claim.NONE

    def _hold(self) -> None:
        abandoned.discard(self.lease_key)
        self._held = _renewer.renewer.hold(self)

    def wait(self) -> ValueEntry | Claim:
        guard = self.guard
        backend = guard.backend
        patience = Patience(
            guard.rec, self.max_wait, self.seen, first=0.002, cap=min(0.25, self.ttl / 10)
        )
        while True:
            found = guard.run(backend.get_many, [self.lease_key, self.key])
            if type(found) is Outcome:
                return Claim.FAILED
            data = found.get(self.key)
            if patience.fresh(data):
                entry = self.decode(data)
                if entry is not None:
                    return entry
            lease = found.get(self.lease_key)
            if lease is None:  # released without a value, or expired: take it over
                claim = self.acquire()
                if claim is not Claim.WAIT:
                    return claim
                continue  # another waiter won the race; look again
            if self._expired(lease):
                claim = self._take_over()
                if claim is not Claim.WAIT:
                    return claim
            elif lease[3:4] in (STORED, UNSTORED):  # no value is coming (or it is gone)
                return Claim.NONE
            if patience.exhausted():
                return Claim.NONE
            patience.pause()

    def _take_over(self) -> Claim:
        """Replace an expired or unparseable lease with ours, unless someone else did."""
        guard = self.guard
        got = guard.run(guard.backend.gets, self.lease_key)
        if type(got) is Outcome:
            return Claim.FAILED
        data, cas_token = got
        if data is None:
            return self.acquire()
        if not self._expired(data):
            return Claim.WAIT  # a live holder just took it
        ok = guard.run(
            guard.backend.cas, self.lease_key, self.value(HOLDING), cas_token, self.ttl,
        )
        if ok is True:
            self._hold()
            return Claim.OWNED
        if ok is False or ok is None:
            return Claim.WAIT
        return Claim.FAILED if ok is Outcome.FAILED else Claim.NONE

    def renew(self) -> bool:
        """From the renewer thread: push the deadline out; False once the lease is not ours."""
        backend = self.guard.backend
        data, cas_token = backend.gets(self.lease_key)
        parsed = None if data is None else self.parse(data)
        if parsed is None or parsed[1] != self.token or parsed[0] != HOLDING:
            return False
        return bool(backend.cas(self.lease_key, self.value(HOLDING), cas_token, self.ttl))

    def done(self, stored: bool) -> None:
        """The holder stored its value (or decided not to): tell the waiters."""
        if not self._held:
            return
        self._unhold()
        got = self.guard.run(
            self.guard.backend.set,
            self.lease_key,
            self.value(STORED if stored else UNSTORED),
            self.ttl,
        )
        if type(got) is Outcome:
            abandoned.add(self.lease_key, self.token)

    def release(self) -> None:
        """Give the lease up without a value (failure, interrupt): one waiter takes over."""
        if not self._held:
            return
        self._unhold()
        got = self.guard.run(self.guard.backend.delete, self.lease_key)
        if type(got) is Outcome:
            abandoned.add(self.lease_key, self.token)

    def abandon(self) -> None:
        """The backend failed this call: stop renewing, touch it no more. Other workers wait
        at most ``lease_ttl``; this process takes the lease over at once (its token)."""
        if not self._held:
            return
        self._unhold()
        abandoned.add(self.lease_key, self.token)

    def _unhold(self) -> None:
        handle, self._held = self._held, 0
        _renewer.renewer.release(handle)

    def __enter__(self) -> StoreLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _forget_after_fork() -> None:
    global abandoned  # a forked child holds none of the parent's leases
    abandoned = _Abandoned()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
