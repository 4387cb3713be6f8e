"""A private memcached for one benchmark run: free loopback port, optional CPU pinning, PID stop.

The server is started with one worker thread (``-t 1``) by default: with several, memcached
hands connections to its threads round-robin, and the benchmark's clients (raw, expcache,
pyDVL) would each land on a different thread -- possibly on a different vCPU -- which biases
the comparison between rows. One thread serves every row the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MemcachedProcess", "exit_on_sigterm", "free_port"]


def free_port() -> int:
    """A port the kernel says is free on 127.0.0.1 (never memcached's default 11211)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != 11211:
            return port


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``with MemcachedProcess()`` still stops the server."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION")
    except OSError:
        return False


class MemcachedProcess:
    """``memcached -l 127.0.0.1 -p <free port>`` as a child, pinned to ``cpus`` when given."""

    def __init__(
        self, *, cpus: Iterable[int] | None = None, threads: int = 1, memory_mb: int = 256
    ) -> None:
        binary = shutil.which("memcached") or "/usr/bin/memcached"
        if not Path(binary).exists():
            raise SystemExit(
                "memcached not found: install it (apt-get install -y memcached) and re-run"
            )
        self.binary = binary
        self.cpus = set(cpus) if cpus is not None else None
        self.threads = threads
        self.memory_mb = memory_mb
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> MemcachedProcess:
        cpus = self.cpus

        def pin() -> None:  # runs in the child before exec: every server thread inherits it
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            cmd = [
                self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                "-m", str(self.memory_mb), "-t", str(self.threads),
                *(["-u", "root"] if os.geteuid() == 0 else []),
            ]
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin
            )
            for _ in range(500):  # up to ~5 s of 10 ms waits on the process itself
                if _answers(self.port):
                    return self
                try:
                    self.proc.wait(timeout=0.01)
                except subprocess.TimeoutExpired:
                    continue
                break
            last_error = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
        raise RuntimeError(f"could not start memcached on a free port: {last_error}")

    def stop(self) -> None:
        """Terminate our child by PID and reap it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        self.proc = None

    def __enter__(self) -> MemcachedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
