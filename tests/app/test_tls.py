"""TLS from YAML, for real: a memcached started with ``-Z`` on a free loopback port.

The TLS options are ``MemcachedBackend``'s own, so the backend the plan builds -- and the
start-up probe it runs with its own settings -- speaks TLS: with ``cache.tls=true`` and the
test CA the run is cached; without TLS, or without the CA, the probe fails (and
``cache.strict`` turns that into an error naming the server).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from expcache.app import build_context, plan, run
from expcache.errors import BackendUnavailable

from ..conftest import MEMCACHED, _free_port
from .conftest import Compose

pytestmark = [pytest.mark.memcached, pytest.mark.slow]


def _openssl(command: str, **paths: Path) -> None:
    args = [str(paths[w[1:]]) if w.startswith("@") else w for w in command.split()]
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl, no network)."""
    names = ("ca_key", "ca", "key", "csr", "cert", "ext")
    files = dict(zip(names, (folder / f"{n}.pem" for n in names), strict=True))
    files["ext"].write_text("subjectAltName=IP:127.0.0.1\n")
    subject = "-subj /CN=127.0.0.1"
    _openssl(
        "req -x509 -newkey rsa:2048 -nodes -keyout @ca_key -out @ca -days 1 " + subject, **files
    )
    _openssl("req -newkey rsa:2048 -nodes -keyout @key -out @csr " + subject, **files)
    _openssl(
        "x509 -req -in @csr -CA @ca -CAkey @ca_key -CAcreateserial -out @cert -days 1 -extfile @ext",
        **files,
    )
    return files["ca"], files["cert"], files["key"]


def _answers(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION")
    except OSError:
        return False


@pytest.fixture
def tls_memcached(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if MEMCACHED is None:
        if os.environ.get("CI"):
            pytest.fail("memcached binary not found -- CI is set, so this is a failure")
        pytest.skip("memcached binary not found")
    ca, cert, key = _certificates(tmp_path)
    port = _free_port()
    proc = subprocess.Popen(
        [
            MEMCACHED,
            "-l",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "0",
            "-Z",
            "-o",
            f"ssl_chain_cert={cert}",
            "-o",
            f"ssl_key={key}",
            *(["-u", "root"] if os.geteuid() == 0 else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(500):  # bounded: waits on the process itself, not on a clock
            if _answers(port, ca):
                break
            try:
                proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"memcached -Z exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        else:
            raise RuntimeError("memcached -Z did not answer over TLS")
        yield f"127.0.0.1:{port}", ca
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_tls_options_from_yaml_reach_the_backend_and_its_probe(
    cfg_of: Compose, tls_memcached: tuple[str, Path], tmp_path: Path
) -> None:
    address, ca = tls_memcached
    base = ("cache=memcached", f"cache.servers=[{address}]", "policy.time_threshold=0")
    cfg = cfg_of(*base, "cache.tls=true", f"cache.tls_ca_file={ca}", "cache.strict=true")
    first = run(cfg, output_dir=tmp_path / "a")["cache_stats"]
    second = run(cfg, output_dir=tmp_path / "b")["cache_stats"]
    assert first["backend"]["tls"] is True
    assert (first["total"]["misses"], first["total"]["sets"]) == (20, 20)
    assert (second["total"]["hits"], second["total"]["misses"]) == (20, 0)


@pytest.mark.parametrize(
    "options",
    [("cache.tls=false",), ("cache.tls=true",)],  # plain text to a TLS port; TLS without the CA
    ids=["no-tls", "tls-without-the-ca"],
)
def test_a_probe_with_the_wrong_tls_settings_fails_at_start(
    cfg_of: Compose, tls_memcached: tuple[str, Path], options: tuple[str, ...]
) -> None:
    address, _ = tls_memcached
    cfg = cfg_of(
        "cache=memcached",
        f"cache.servers=[{address}]",
        "cache.strict=true",
        "cache.timeout=0.5",
        *options,
    )
    with pytest.raises(BackendUnavailable) as info:
        build_context(plan(cfg))
    assert address in str(info.value)
