"""What a memcached user configures and what they see: servers, TLS, expiry, error mapping.

Every check raises ``ConfigError`` naming the parameter (``servers[2]``, ``tls_ca_file``), so
the Hydra app can relocate it (``cache.servers[2]``) without parsing a message. Errors of
pymemcache and of sockets are mapped onto ``BackendError`` subclasses here, once.
"""

from __future__ import annotations

import math
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from .. import _validate as v
from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    StoreRefused,
    ValueTooLarge,
)
from . import _wire

__all__ = ["build_tls", "check_tls", "expire_time", "mapped", "parse_server", "server_list", "translate"]

_RELATIVE_EXPIRY_LIMIT = 30 * 24 * 3600  # memcached reads larger expiries as Unix times
_HOST = re.compile(r"[A-Za-z0-9._%:-]+")  # names, IPv4, IPv6 (with a %zone)
_SERVER = "'host:port' with a port in 1..65535, e.g. '127.0.0.1:11211'"


def parse_server(server: Any, param: str = "server") -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` -> ``(host, port)``, validated."""
    port: Any
    if isinstance(server, str):
        host, sep, port_s = server.strip().rpartition(":")
        if not sep or not port_s.isascii() or not port_s.isdigit():
            raise ConfigError(param=param, value=server, expected=_SERVER)
        host, port = host.strip("[]"), int(port_s)
    elif isinstance(server, (tuple, list)) and len(server) == 2 and isinstance(server[0], str):
        host, port = server
        if isinstance(port, str) and port.isascii() and port.isdigit():
            port = int(port)
    else:
        raise ConfigError(
            param=param, value=server, expected=f"{_SERVER}, or a (host, port) pair"
        )
    if not _HOST.fullmatch(host):
        raise ConfigError(
            param=param,
            value=server,
            expected=_SERVER,
            hint="a host name or IP address (a cluster is a list of servers)",
        )
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(param=param, value=server, expected=_SERVER)
    return host, port


def server_list(servers: Any) -> list[tuple[str, int]]:
    pair = isinstance(servers, tuple) and len(servers) == 2 and type(servers[1]) is int
    if isinstance(servers, str) or pair:
        specs: list[Any] = [servers]
    elif isinstance(servers, Sequence) and not isinstance(servers, (bytes, bytearray)):
        specs = list(servers)
    else:
        raise ConfigError(param="servers", value=servers, expected=f"a list of {_SERVER}")
    if not specs:
        raise ConfigError(param="servers", value=servers, expected=f"at least one {_SERVER}")
    parsed: list[tuple[str, int]] = []
    for i, spec in enumerate(specs):
        address = parse_server(spec, param=f"servers[{i}]")
        if address in parsed:
            raise ConfigError(
                param=f"servers[{i}]",
                value=spec,
                expected=f"a server not listed already (it is servers[{parsed.index(address)}])",
            )
        parsed.append(address)
    return parsed


def translate(exc: BaseException, where: str) -> BackendError:
    """pymemcache and socket errors -> ours. Order matters: ``MemcacheUnexpectedCloseError``
    is a ``MemcacheServerError`` subclass but means a lost connection, not a server reply."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return BackendTimeout(f"memcached {where}: no answer in time ({exc})")
    if isinstance(exc, MemcacheUnexpectedCloseError):
        return BackendUnavailable(f"memcached {where}: connection closed by the server")
    if isinstance(exc, MemcacheServerError):
        text = str(exc)  # the protocol's own SERVER_ERROR strings
        if "too large" in text:
            return ValueTooLarge(f"memcached {where}: {text}")
        if "out of memory" in text:
            return StoreRefused(f"memcached {where}: server full: {text}")
        return BackendError(f"memcached {where}: server error {text}")
    if isinstance(exc, _wire.ProtocolError):
        return BackendError(f"memcached {where}: protocol error: {exc}")
    if isinstance(exc, MemcacheClientError):
        return BackendError(f"memcached {where}: client error {exc}")
    if isinstance(exc, OSError):  # refused, reset, unreachable, not resolvable, TLS
        return BackendUnavailable(f"memcached {where}: {exc!r}")
    if isinstance(exc, MemcacheError):
        return BackendError(f"memcached {where}: {exc!r}")
    # A client bug must cost a counted miss, not the caller's call.
    return BackendError(f"memcached {where}: unexpected {exc!r}")


@contextmanager
def mapped(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise translate(exc, where) from exc


def expire_time(seconds: float) -> int:
    """Seconds from now -> memcached's exptime: relative up to 30 days, absolute beyond."""
    if not seconds:
        return 0
    if seconds > _RELATIVE_EXPIRY_LIMIT:
        return math.ceil(time.time() + seconds)
    return max(1, math.ceil(seconds))


def check_tls(
    context: Any, tls: Any, ca_file: Any, cert_file: Any, key_file: Any
) -> None:
    """The TLS options' types and combinations (the files are read by ``build_tls``)."""
    if context is not None and not isinstance(context, ssl.SSLContext):
        raise ConfigError(param="tls_context", value=context, expected="an ssl.SSLContext or null")
    v.boolean("tls", tls)
    for param, path in (
        ("tls_ca_file", ca_file),
        ("tls_cert_file", cert_file),
        ("tls_key_file", key_file),
    ):
        v.text(param, path, pattern=r".+", describe="a file path", allow_none=True)
    if key_file and not cert_file:
        raise ConfigError(param="tls_key_file", value=key_file, expected="set with tls_cert_file")


def build_tls(
    tls: bool, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """The client's TLS context from plain settings (which pickle; a context does not)."""
    if not tls:
        return None
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            param="tls_ca_file",
            value=ca_file,
            expected="a PEM bundle of CA certificates, or null for the system CAs",
            hint=f"cannot load it: {exc}",
        ) from exc
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                param="tls_cert_file",
                value=cert_file,
                expected="a PEM client certificate (with tls_key_file, or the key inside)",
                hint=f"cannot load it with tls_key_file={key_file!r}: {exc}",
            ) from exc
    return context
