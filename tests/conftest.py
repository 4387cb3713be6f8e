"""Shared fixtures: real memcached processes on free loopback ports, never the default port.

``memcached_server`` is one server for the session (flushed before each test that asks for
``memcached``); ``memcached_factory`` starts private servers that a test may kill, pause
(SIGSTOP) or restart on the same port. Without a ``memcached`` binary the tests that need it
are skipped locally and *fail* when ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import ray_host

MEMCACHED = shutil.which("memcached") or (
    "/usr/bin/memcached" if Path("/usr/bin/memcached").exists() else None
)

# memcached's well-known port: only for asserting documented defaults, never connected to.
DEFAULT_PORT = 11_211


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    if port == DEFAULT_PORT:  # never the default port of a real server
        return _free_port()
    return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION")
    except OSError:
        return False


@dataclass
class MemcachedServer:
    """A memcached child process bound to 127.0.0.1:<port>, controlled by PID."""

    port: int
    memory_mb: int = 64
    item_size: str = "1m"
    extra_args: tuple[str, ...] = ()  # e.g. ("-M",): refuse stores when full instead of evicting
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    paused: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> MemcachedServer:
        assert MEMCACHED is not None
        self.proc = subprocess.Popen(
            [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
             "-m", str(self.memory_mb), "-I", self.item_size, "-t", "2", *self.extra_args,
             *(["-u", "root"] if os.geteuid() == 0 else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for _ in range(500):  # bounded: up to ~5 s of 10 ms waits on the process itself
            if _answers(self.port):
                return self
            try:
                self.proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                continue
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"memcached on port {self.port} exited: {err}")
        raise RuntimeError(f"memcached on port {self.port} did not answer")

    def stop(self) -> None:
        """Kill by PID (SIGKILL: a crash, not a graceful shutdown) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        self.paused = False

    kill = stop

    def restart(self) -> MemcachedServer:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP, and return only once every thread has stopped (a stop is asynchronous:
        without waiting, a request sent right after could still be answered)."""
        if self.paused:  # a second SIGSTOP would bring no new stop report to wait for
            return
        os.kill(self.pid, signal.SIGSTOP)
        _, status = os.waitpid(self.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"memcached {self.pid} did not stop: status {status}"
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        os.kill(self.pid, signal.SIGCONT)
        _, status = os.waitpid(self.pid, os.WCONTINUED)
        assert os.WIFCONTINUED(status), f"memcached {self.pid} did not resume: status {status}"
        self.paused = False

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"flush_all\r\n")
            assert s.recv(64).startswith(b"OK")

    def stat(self, name: str) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"stats\r\n")
            buf = b""
            while not buf.endswith(b"END\r\n"):
                buf += s.recv(65536)
        for line in buf.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == name:
                return int(parts[2])
        raise KeyError(name)


def _require_memcached() -> None:
    if MEMCACHED is None:
        msg = "memcached binary not found (install it: apt-get install -y memcached)"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- CI is set, so this is a failure, not a skip")
        pytest.skip(msg)


class MemcachedFactory:
    def __init__(self) -> None:
        self.servers: list[MemcachedServer] = []

    def __call__(self, **kwargs: object) -> MemcachedServer:
        _require_memcached()
        error: RuntimeError | None = None
        for _attempt in range(5):
            server = MemcachedServer(_free_port(), **kwargs)  # type: ignore[arg-type]
            try:
                server.start()
            except RuntimeError as exc:
                error = exc
                server.stop()
                continue
            self.servers.append(server)
            return server
        raise RuntimeError(f"could not start memcached on a free port: {error}")

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def _session_factory() -> Iterator[MemcachedFactory]:
    factory = MemcachedFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def memcached_server(_session_factory: MemcachedFactory) -> MemcachedServer:
    """One server for the session; use ``memcached`` for a flushed one."""
    return _session_factory()


@pytest.fixture
def memcached(memcached_server: MemcachedServer) -> MemcachedServer:
    """The session server, flushed: the test starts from an empty cache."""
    if memcached_server.proc is None or memcached_server.proc.poll() is not None:
        memcached_server.start()
    memcached_server.flush()
    return memcached_server


@pytest.fixture
def memcached_factory() -> Iterator[MemcachedFactory]:
    """Private servers a test may kill, pause or restart; all stopped afterwards."""
    factory = MemcachedFactory()
    yield factory
    factory.close()


# -- backends for the memoizer suites (one test body, every backend it applies to) ------------
@pytest.fixture(params=["memcached", "disk", "memory"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """A fresh, empty backend of each kind: memcached (the flushed session server), a disk
    cache in ``tmp_path`` and an in-memory store."""
    from .backend_fixtures import make_backend

    address = request.getfixturevalue("memcached").address if request.param == "memcached" else None
    return make_backend(request.param, tmp_path, address)


@pytest.fixture(params=["memcached", "disk"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """The backends other processes can see: memcached and disk."""
    from .backend_fixtures import make_backend

    address = request.getfixturevalue("memcached").address if request.param == "memcached" else None
    return make_backend(request.param, tmp_path, address)


@pytest.fixture(scope="session")
def _session_cluster(_session_factory: MemcachedFactory) -> list[MemcachedServer]:
    return [_session_factory() for _ in range(3)]


@pytest.fixture
def memcached_cluster(_session_cluster: list[MemcachedServer]) -> list[MemcachedServer]:
    """Three flushed session servers, for ``HashClient`` (cluster) backends."""
    for server in _session_cluster:
        if server.proc is None or server.proc.poll() is not None:
            server.start()
        server.flush()
    return _session_cluster


# -- hostile servers: a real TCP peer that answers too slowly, or never finishes -------------
class HostileServer:
    """A TCP server on a free loopback port that answers memcached clients badly, for real.

    Each connection answers its first requests with ``replies`` (one per request, at once),
    then any further request with ``prefix`` followed by ``drip`` one byte every ``interval``
    seconds, up to ``cap`` bytes (then it closes). An empty ``drip`` stalls instead. It counts
    the bytes dripped and sets ``disconnected`` when a client hangs up, so tests bound a client by what the server managed to send (an
    operation bounded per read keeps reading for ``cap`` bytes; one bounded per operation
    stops after about ``timeout / interval``) and never by wall-clock thresholds.
    With ``tls`` (a server ``ssl.SSLContext``) it speaks TLS.
    """

    def __init__(
        self,
        *,
        replies: tuple[bytes, ...] = (),
        prefix: bytes = b"",
        drip: bytes = b"x",
        interval: float = 0.01,
        cap: int = 600,
        tls: ssl.SSLContext | None = None,
        disconnected: threading.Event | None = None,
    ) -> None:
        self.replies, self.prefix, self.drip = replies, prefix, drip
        self.interval, self.cap, self.tls = interval, cap, tls
        self.dripped = 0
        self.connections = 0
        self.disconnected = disconnected or threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
            replies = list(self.replies)
            while replies:
                if not self._request(conn):
                    return
                conn.sendall(replies.pop(0))
            if not self._request(conn):
                return
            if self.prefix:
                conn.sendall(self.prefix)
            self._trickle(conn)
        except OSError:
            return
        finally:
            conn.close()

    def _request(self, conn: socket.socket) -> bool:
        while not self._stop.is_set():
            if select.select([conn], [], [], 0.1)[0]:
                if conn.recv(1 << 20):
                    return True
                self.disconnected.set()  # hung up between requests
                return False
        return False

    def _trickle(self, conn: socket.socket) -> None:
        sent = 0
        while sent < self.cap and not self._stop.is_set():
            if select.select([conn], [], [], self.interval)[0]:
                try:
                    data = conn.recv(1 << 20)  # more of a long request: drained, not answered
                except OSError:
                    data = b""
                if not data:
                    self.disconnected.set()
                    return
                continue
            if not self.drip:
                continue  # a stall: only watch for the client hanging up
            try:
                conn.send(self.drip[sent % len(self.drip) :][:1])
            except OSError:
                self.disconnected.set()
                return
            sent += 1
            with self._lock:
                self.dripped += 1

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self._listener.close()
        self._thread.join(5)


class HostileFactory:
    def __init__(self) -> None:
        self.servers: list[HostileServer] = []

    def __call__(self, **kwargs: Any) -> HostileServer:
        server = HostileServer(**kwargs)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def hostile() -> Iterator[HostileFactory]:
    """Start hostile servers (``hostile(prefix=..., drip=...)``); all stopped afterwards."""
    factory = HostileFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


# -- a small filesystem that really fills up ---------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only): writes beyond it fail with ENOSPC,
    as on a full disk. Skipped, with the kernel's reason, where mounting is refused."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# -- Ray: a real cluster on this machine ---------------------------------------------------------
RAY_LOOPBACK = ray_host.LOOPBACK  # every node, driver and connection of the tests on loopback
RAY_NODE_ARGS: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


def _require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        msg = "Ray is not installed (pip install -e '.[ray]')"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- CI is set, so this is a failure, not a skip")
        pytest.skip(msg)


def _can_isolate() -> str | None:
    """Why a node cannot be given a host of its own here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    done = subprocess.run(
        ["unshare", "--mount", "--uts", "--propagation", "private", "true"],
        capture_output=True, text=True,
    )
    return None if done.returncode == 0 else f"unshare refused: {done.stderr.strip()}"


@dataclass
class RayCluster:
    """A head node (resource ``head``), a second node on this host (``node2``) and, where
    mount namespaces are allowed, a node that behaves like another host (``host2``)."""

    address: str
    resources: tuple[str, ...]
    other_host: str | None  # "host2", or None where it could not be started (and why)
    why_no_other_host: str | None = None

    @staticmethod
    def on(resource: str) -> dict[str, Any]:
        """``.options(**cluster.on("node2"))``: run a task on that node."""
        return {"resources": {resource: 0.001}}

    def require_other_host(self) -> str:
        if self.other_host is None:
            msg = f"no node with a host of its own: {self.why_no_other_host}"
            if os.environ.get("CI"):
                pytest.fail(msg + " -- CI is set, so this is a failure, not a skip")
            pytest.skip(msg)
        return self.other_host


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """One Ray cluster for the session, started here and shut down here (never Ray's own
    stop command: it would end every Ray process of the machine)."""
    _require_ray()
    env = pytest.MonkeyPatch()
    for key, value in RAY_LOOPBACK.items():
        env.setenv(key, value)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={**RAY_NODE_ARGS, "resources": {"head": 1}, "include_dashboard": False},
    )
    other: subprocess.Popen[str] | None = None
    try:
        cluster.add_node(**RAY_NODE_ARGS, resources={"node2": 1})
        why = _can_isolate()
        if why is None:
            other = ray_host.start(cluster.address, tmp_path_factory.getbasetemp())
        resources = ("head", "node2") + (("host2",) if other is not None else ())
        yield RayCluster(cluster.address, resources, "host2" if other else None, why)
    finally:
        if other is not None:
            ray_host.stop(other)
        cluster.shutdown()
        env.undo()


@pytest.fixture
def ray_driver(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """This process connected to the session cluster (and disconnected after the test); the
    first task on every node returns only once that node has joined."""
    import ray

    if ray.is_initialized():  # a test that failed before its own shutdown
        ray.shutdown()
    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:
        _wait_for_nodes(ray_cluster)
        yield ray_cluster
    finally:
        ray.shutdown()


def _node_of() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), socket.gethostname()


def _wait_for_nodes(cluster: RayCluster) -> dict[str, tuple[str, str]]:
    import ray

    where = ray.remote(num_cpus=0)(_node_of)
    refs = {r: where.options(**cluster.on(r)).remote() for r in cluster.resources}
    return {r: ray.get(ref, timeout=120) for r, ref in refs.items()}
