"""What the proposed hit-path changes would buy, measured against the current code in one run.

Run from the repository root (about 40 s)::

    .venv/bin/python benchmarks/whatif_fastpath.py [--pin same|split|none] [--seconds 30]

The changes proposed in ``benchmarks/README.md`` live in files this directory does not own
(``backends/memcached.py``, ``serde.py``, ``memoize.py``), so they are *prototyped here* as
subclasses that are stacked one at a time on top of the current ``Memoized`` and measured
interleaved with the current code and with the raw ``get`` floor:

- B: pymemcache on a blocking socket whose timeouts are the kernel's ``SO_RCVTIMEO``/
  ``SO_SNDTIMEO`` (Python's ``settimeout`` polls before every send and recv);
- C: B, with errors mapped by ``try/except`` in ``get`` instead of a ``@contextmanager``;
- D: ``get``/``get_many`` written directly on the socket (one ``sendall``, one ``recv``, a
  ``find``-based parse), bypassing pymemcache's per-line Python parsing;
- E: D, with the envelope's key check done with xxh3-128 instead of blake2b;
- F: E, with ``Memoized.map`` doing one lean pass when every call hits (no per-call
  ``isinstance(c, Mapping)``, no ``_decode`` wrapper, no per-key bookkeeping dicts).

These are measuring prototypes, not production code: no chunk reassembly, no reconnection, no
cluster support. Entries under a prototype's namespace use the prototype's envelope.
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from pymemcache.client.base import Client

from _measure import Case, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm
from cases import ARRAY_SIZE, BATCH, SMALL_ARGS, array_fn, small_fn
from expcache import MemcachedBackend, Memoized
from expcache.errors import BackendTimeout, BackendUnavailable, SerdeError
from expcache.serde import Serde

_CHUNK = b"XCCHUNK1"
_PLAIN = b"XC\x01\x00"  # magic, format 1, no flags: unsigned, uncompressed


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Blocking socket, timeouts enforced by the kernel: no poll() before each call."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class WireConn:
    """``get``/``get_many`` straight on a TCP_NODELAY socket (the memcached text protocol)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=1.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _kernel_timeouts(self.sock, timeout)

    def _read_until_end(self, buf: bytes) -> bytes:
        while not buf.endswith(b"END\r\n"):
            more = self.sock.recv(262144)
            if not more:
                raise ConnectionResetError("memcached closed the connection")
            buf += more
        return buf

    def get(self, key: str) -> bytes | None:
        sock = self.sock
        sock.sendall(b"get " + key.encode() + b"\r\n")
        buf = sock.recv(65536)
        if buf == b"END\r\n":
            return None
        nl = buf.find(b"\r\n")
        size = int(buf[buf.rfind(b" ", 0, nl) + 1 : nl])
        need = nl + 2 + size + 7  # value, \r\n, END\r\n
        while len(buf) < need:
            more = sock.recv(max(65536, need - len(buf)))
            if not more:
                raise ConnectionResetError("memcached closed the connection")
            buf += more
        return buf[nl + 2 : nl + 2 + size]

    def get_many(self, keys: list[str]) -> dict[str, bytes]:
        self.sock.sendall(b"get " + " ".join(keys).encode() + b"\r\n")
        buf = self._read_until_end(self.sock.recv(262144))
        out: dict[str, bytes] = {}
        pos = 0
        find = buf.find
        while True:
            nl = find(b"\r\n", pos)
            line = buf[pos:nl]
            if line == b"END":
                return out
            _, key, _, size = line.split(b" ", 4)[:4]
            start = nl + 2
            end = start + int(size)
            out[key.decode()] = buf[start:end]
            pos = end + 2


def _connect(client: Any) -> socket.socket:
    client._connect()
    sock: socket.socket = client.sock
    return sock


class KernelTimeoutBackend(MemcachedBackend):
    """B: the current backend, its pymemcache socket switched to kernel timeouts."""

    @property
    def client(self) -> Any:
        client: Any = MemcachedBackend.client.fget(self)  # type: ignore[attr-defined]
        if client.sock is None:
            _kernel_timeouts(_connect(client), self.timeout)
        return client


class InlineBackend(KernelTimeoutBackend):
    """C: B + error mapping with try/except (a @contextmanager costs ~1 µs per call)."""

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = self.client.get(key)
        except (TimeoutError, BlockingIOError) as exc:
            raise BackendTimeout(f"memcached {self._where}: no answer in time") from exc
        except OSError as exc:
            raise BackendUnavailable(f"memcached {self._where}: {exc!r}") from exc
        if value is not None and value[:8] == _CHUNK:
            return self._assemble(key, value)
        return value


class WireBackend(MemcachedBackend):
    """D: ``get``/``get_many`` on the wire directly, errors mapped inline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        host, port = self.servers[0]
        self.wire = WireConn(host, port, self.timeout)

    def get(self, key: str) -> bytes | None:
        try:
            value = self.wire.get(key)
        except (TimeoutError, BlockingIOError) as exc:  # SO_RCVTIMEO expiry is EAGAIN
            raise BackendTimeout(f"memcached {self._where}: no answer in time") from exc
        except OSError as exc:
            raise BackendUnavailable(f"memcached {self._where}: {exc!r}") from exc
        if value is not None and value[:8] == _CHUNK:
            return self._assemble(key, value)
        return value

    def get_many(self, keys: Any) -> dict[str, bytes]:
        try:
            found = self.wire.get_many(list(keys))
        except (TimeoutError, BlockingIOError) as exc:
            raise BackendTimeout(f"memcached {self._where}: no answer in time") from exc
        except OSError as exc:
            raise BackendUnavailable(f"memcached {self._where}: {exc!r}") from exc
        for value in found.values():
            if value[:8] == _CHUNK:
                raise NotImplementedError("prototype: no chunk reassembly")
        return found


class XxhSerde(Serde):
    """E: the envelope's key digest as xxh3-128 (it is an integrity check; the HMAC is the
    security boundary), checked with one header compare on the common unsigned path."""

    def dumps(self, key: str, entry: Any) -> bytes:
        data = super().dumps(key, entry)
        return data[:4] + xxhash.xxh3_128_digest(key.encode()) + data[20:]

    def loads(self, key: str, data: bytes) -> Any:
        if self.signing_key is not None or data[:4] != _PLAIN:
            raise NotImplementedError("prototype: unsigned, uncompressed entries only")
        if data[4:20] != xxhash.xxh3_128_digest(key.encode()):
            raise SerdeError(f"entry under {key!r} was written for another key")
        try:
            return pickle.loads(data[20:])
        except Exception as exc:
            raise SerdeError(f"entry under {key!r} cannot be decoded: {exc!r}") from exc


class LeanMap(Memoized[Any, Any]):
    """F: the all-hits path of ``map`` in one pass; anything else defers to the real ``map``."""

    def map(self, calls: Any, *, n_jobs: int = 1) -> list[Any]:
        calls = list(calls)
        keyf = self._keys
        empty: dict[str, Any] = {}
        keys = [keyf(c, empty) if type(c) is tuple else keyf((), c) for c in calls]
        try:
            found = self.backend.get_many(list(dict.fromkeys(keys)))
            loads = self.serde.loads
            entries = {k: loads(k, d) for k, d in found.items()}
        except Exception:
            return super().map(calls, n_jobs=n_jobs)
        if len(entries) != len(set(keys)) or any(e[0] != "v" for e in entries.values()):
            return super().map(calls, n_jobs=n_jobs)
        with self._lock:
            self.stats.hits += len(keys)
            self.stats.saved_seconds += sum(e[2] for e in entries.values())
        return [entries[k][1] for k in keys]


def build(address: str) -> list[Case]:
    host, _, port_s = address.rpartition(":")
    raw = Client((host, int(port_s)), no_delay=True)
    array = np.random.default_rng(0).random(ARRAY_SIZE)
    calls = [(i, 0.5, "abc") for i in range(BATCH)]
    variants: list[tuple[str, MemcachedBackend, Serde | None]] = [
        ("A", MemcachedBackend(address), None),
        ("B", KernelTimeoutBackend(address), None),
        ("C", InlineBackend(address), None),
        ("D", WireBackend(address), None),
        ("E", WireBackend(address), XxhSerde()),
        ("F", WireBackend(address), XxhSerde()),
    ]
    labels = {"A": "current code", "B": "kernel socket timeouts", "C": "B + inline error mapping",
              "D": "own get/get_many on the socket", "E": "D + xxh3 key digest in envelope",
              "F": "E + lean all-hits map"}
    floor = Memoized(small_fn, MemcachedBackend(address), time_threshold=0)
    floor(*SMALL_ARGS)
    key = floor.cache_key(*SMALL_ARGS)
    batch_keys = [floor.cache_key(*c) for c in calls]
    floor.map(calls)
    cases = [
        Case("raw_get", "raw pymemcache get (the floor)", lambda: raw.get(key)),
        Case("raw_get_many_100", "raw pymemcache get_many of 100 keys",
             lambda: raw.get_many(batch_keys), reference="raw_get"),
    ]
    for tag, backend, serde in variants:
        label = f"{tag}: {labels[tag]}"
        kind = LeanMap if tag == "F" else Memoized
        hit = kind(small_fn, backend, time_threshold=0, namespace=f"wi{tag}")
        if serde is not None:
            hit.serde = serde
        hit.map(calls)
        assert hit.map(calls) == [small_fn(*c) for c in calls] and hit.stats.hits >= BATCH
        if tag != "F":  # F changes map only: its single hits are E's
            arr = Memoized(array_fn, backend, time_threshold=0, namespace=f"wi{tag}")
            if serde is not None:
                arr.serde = serde
            hit(*SMALL_ARGS)
            arr(array)
            cases += [
                Case(f"{tag}_hit_small", f"{label}; hit, small args",
                     functools.partial(hit, *SMALL_ARGS), reference="raw_get", target=1.2),
                Case(f"{tag}_hit_array", f"{label}; hit, array arg",
                     functools.partial(arr, array), reference="raw_get", target=1.5),
            ]
        if tag in "ADEF":  # B and C do not touch get_many
            cases.append(Case(f"{tag}_map_100", f"{label}; map over 100 hits",
                              functools.partial(hit.map, calls), reference="raw_get_many_100",
                              target=1.5))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", choices=["same", "split", "none"], default="same")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    exit_on_sigterm()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus: set[int] | None = None
    if args.pin != "none":
        os.sched_setaffinity(0, {cpus[0]})
        server_cpus = {cpus[0]} if args.pin == "same" else {cpus[-1]}
    with MemcachedProcess(cpus=server_cpus) as server:
        cases = build(server.address)
        run_interleaved(cases, seconds=args.seconds,
                        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    rows = {c.name: summarize(c) for c in cases}
    print(f"### What-if: proposed hit-path changes (pin={args.pin}, same run)\n")
    print("| row | median µs | p90 µs | x reference | target |")
    print("|---|---:|---:|---:|---|")
    for case in cases:
        s = rows[case.name]
        ratio = s.median_us / rows[case.reference].median_us if case.reference else None
        verdict = "-"
        if case.target is not None and ratio is not None:
            verdict = f"<= {case.target} {'met' if ratio <= case.target else 'MISSED'}"
        shown = "-" if ratio is None else f"{ratio:.2f}"
        print(f"| {case.what} | {s.median_us:.1f} | {s.p90_us:.1f} | {shown} | {verdict} |")
    print(f"\n(script: {Path(__file__).name}; prototypes only, see its docstring)")


if __name__ == "__main__":
    main()
