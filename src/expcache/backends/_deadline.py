"""One deadline per memcached operation, enforced on the sockets pymemcache opens.

A socket timeout bounds one ``recv``; a server that sends one byte every 0.3 s never trips a
0.5 s timeout and holds a call for as long as it likes. pymemcache takes a ``socket_module``,
so every socket it opens is a ``DeadlineSocket``: before each send or receive it sets the
socket's timeout to what is left of the operation's ``Deadline`` (within a slack of 10 % of
the timeout, so a healthy hit costs no extra system call), and raises ``TimeoutError`` once
nothing is left. The backend starts the deadline when an operation starts; pymemcache's
commands and ours (``_wire``) then share it. TLS goes through ``DeadlineTLSContext``, which
wraps the TLS socket in turn, so TLS reads are bounded the same way.
"""

from __future__ import annotations

import socket
import ssl
from time import monotonic
from typing import Any

__all__ = ["Deadline", "DeadlineSocket", "DeadlineSocketModule", "DeadlineTLSContext"]


class Deadline:
    """The time an operation must end by; one per thread and client, restarted per operation.

    ``extend()`` grants a fresh ``timeout`` after progress that proves the server is not
    trickling: a (re)connection, and each whole chunk of a large value moved. A server that
    never completes an item therefore costs one timeout, however it paces its bytes.
    """

    __slots__ = ("expires", "slack", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.slack = timeout / 10
        self.expires = monotonic() + timeout

    def start(self) -> None:
        self.expires = monotonic() + self.timeout

    def extend(self) -> None:
        self.expires = max(self.expires, monotonic() + self.timeout)


class DeadlineSocket:
    """A socket whose every send and receive is bounded by the operation's deadline."""

    __slots__ = ("_current", "_deadline", "_sock")

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock = sock
        self._deadline = deadline
        self._current: float | None = sock.gettimeout()

    def _arm(self) -> None:
        deadline = self._deadline
        left = deadline.expires - monotonic()
        if left <= 0:
            raise TimeoutError("memcached operation exceeded its deadline")
        current = self._current
        if current is None or not left <= current <= left + deadline.slack:
            current = left + deadline.slack / 2
            self._sock.settimeout(current)
            self._current = current

    def recv(self, size: int) -> bytes:
        self._arm()
        return self._sock.recv(size)

    def recv_into(self, buffer: Any, size: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, size)

    def sendall(self, data: Any) -> None:
        self._arm()
        self._sock.sendall(data)

    def send(self, data: Any) -> int:
        self._arm()
        return self._sock.send(data)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)
        self._current = value

    def connect(self, address: Any) -> None:
        # Bounded by connect_timeout (pymemcache sets it just before); the exchange that
        # follows gets a whole timeout of its own.
        self._sock.connect(address)
        self._deadline.extend()

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:  # setsockopt, fileno, getpeername, ...
        return getattr(self._sock, name)


class DeadlineSocketModule:
    """What pymemcache's ``socket_module`` needs: ``socket()`` plus the module's constants."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def socket(self, *args: Any, **kwargs: Any) -> DeadlineSocket:
        return DeadlineSocket(socket.socket(*args, **kwargs), self.deadline)

    def __getattr__(self, name: str) -> Any:  # AF_INET, getaddrinfo, TCP_NODELAY, ...
        return getattr(socket, name)


class DeadlineTLSContext:
    """An ``ssl.SSLContext`` whose sockets stay ``DeadlineSocket``s once wrapped."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock: Any, server_hostname: str | None = None, **kwargs: Any) -> Any:
        if isinstance(sock, DeadlineSocket):
            wrapped = self.context.wrap_socket(
                sock._sock, server_hostname=server_hostname, **kwargs
            )
            return DeadlineSocket(wrapped, sock._deadline)
        return self.context.wrap_socket(sock, server_hostname=server_hostname, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)
