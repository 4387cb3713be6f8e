"""expcache on Ray: pyDVL's joblib workers as Ray tasks, and which hosts a run spans.

A memoized function needs nothing from this module to run on Ray: it pickles into Ray tasks
like into any worker, connects lazily there, and every node that reaches the same memcached
shares its entries. What needs help is pyDVL 0.10 on joblib's Ray backend
(``ray.util.joblib``), and knowing when a cache cannot be shared by the hosts of a run:

- **Generators.** pyDVL's ``fit()`` consumes ``Parallel(return_as="generator_unordered")`` and
  refuses a backend without ``supports_return_generator``. joblib denies it to its
  multiprocessing backend (``multiprocessing.Pool``'s handler threads can deadlock when a
  generator is abandoned), and Ray's ``RayBackend`` inherits the denial although its pool is
  Ray's own (actors, results collected by Ray's result thread). ``RayBackend`` is used here
  through a subclass that declares the support, registered as joblib's ``"ray"`` backend;
  Ray's class is left as it is (pyDVL's documented workaround mutates it).
- **The stop flag.** ``make_parallel_flag()`` gives every multiprocessing-derived backend,
  ``RayBackend`` included, a ``MultiprocessingFlag``: one byte of POSIX shared memory
  (``/dev/shm/<name>`` of the *driver's host*), pickled by name into every task and
  re-opened there. Two failures follow. On another host the segment does not exist, so every
  task scheduled there fails to unpickle its arguments (``FileNotFoundError``) and the fit
  fails. On the driver's own host, the tasks still queued in Ray's pool when ``fit()`` stops
  are unpickled after ``make_parallel_flag()`` has unlinked the segment: the
  ``FileNotFoundError`` tracebacks Ray logs after every fit (those tasks' results were being
  discarded anyway). Under the Ray backend, pyDVL gets a ``RayFlag`` instead: the flag lives
  in a small Ray actor, which every node reaches; a worker reads it without blocking, at most
  every ``RayFlag.POLL_SECONDS``, so checking it costs nothing on the hot path; a flag whose
  actor is gone reads as set, because the actor goes only when its fit is over.
- **Hosts.** ``cluster_hosts()`` lists the distinct hosts of the connected cluster;
  ``check_reach()`` warns (or, ``strict``, raises) when a backend whose entries stay on one
  host (disk) or in one process (memory) serves a run that spans several hosts.

Nothing here imports Hydra; Ray and pyDVL are imported when used, so the app can import this
module for ``check_reach`` without either installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..backends.base import Backend
from ..errors import BackendUnavailable

__all__ = [
    "JOBLIB_NAME",
    "RayFlag",
    "check_reach",
    "cluster_hosts",
    "joblib_on_ray",
    "register",
]

log = logging.getLogger("expcache")

JOBLIB_NAME = "ray"  # joblib's name for the backend, as ray.util.joblib.register_ray() uses
# What a Ray started here (no address) is given unless the caller says otherwise: no
# dashboard (a web server nobody asked for), and loopback only (a Ray that one run starts
# for itself has no other nodes, so nothing else should reach it). pyDVL's import-time
# FutureWarnings are kept out of every worker's log.
_LOCAL_INIT: Mapping[str, Any] = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"}
_WORKER_ENV = {"PYTHONWARNINGS": "ignore::FutureWarning"}

_backend_class: type | None = None


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError("parallel.backend=ray needs Ray: pip install 'expcache[ray]'") from exc
    return ray


# ----------------------------------------------------------------------------- the flag
class _FlagState:
    """The actor behind a ``RayFlag`` (a class, made remote when a flag is created)."""

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def reset(self) -> None:
        self.value = False

    def get(self) -> bool:
        return self.value

    def node(self) -> str:
        """The node this flag lives on (diagnostics; the tests check its placement)."""
        return str(_ray().get_runtime_context().get_node_id())


def _rebuild_flag(actor: Any) -> RayFlag:
    return RayFlag(actor)


class RayFlag:
    """pyDVL's stop flag (``pydvl.valuation.parallel.Flag`` protocol) for tasks on any node.

    The driver's ``set()`` is local at once and sent to the actor; a worker's copy polls the
    actor with ``ray.wait(timeout=0)`` on a pending read, at most every ``POLL_SECONDS``, and
    remembers a set flag. ``unlink()`` (the driver, when the fit ends) kills the actor.
    """

    POLL_SECONDS = 0.05

    def __init__(self, actor: Any) -> None:
        self._actor = actor
        self._value = False
        self._pending: Any = None
        self._next_poll = 0.0

    @classmethod
    def create(cls) -> RayFlag:
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # num_cpus=0: the flag must never wait for a CPU that the pool's workers hold. On the
        # driver's node: a flag whose actor is gone reads as set, which is true there (the
        # fit's own node is gone), but would stop a fit whose flag sat on another node that
        # failed. Not soft: Ray's soft affinity placed it elsewhere although the node was free.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        remote = ray.remote(num_cpus=0, max_restarts=0)(_FlagState)
        return cls(remote.options(scheduling_strategy=here).remote())

    def set(self) -> None:
        self._value = True
        with contextlib.suppress(Exception):
            self._actor.set.remote()

    def reset(self) -> None:
        self._value = False
        self._pending = None
        _ray().get(self._actor.reset.remote())

    def __call__(self) -> bool:
        if self._value:
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + self.POLL_SECONDS
        ray = _ray()
        try:
            if self._pending is None:
                self._pending = self._actor.get.remote()
            ready, _ = ray.wait([self._pending], timeout=0)
            if ready:
                self._value = bool(ray.get(self._pending))
                self._pending = None
        except ray.exceptions.RayError:
            self._value = True  # the actor is gone: the fit that owned it has ended
        return self._value

    def __bool__(self) -> bool:
        return self()

    def unlink(self) -> None:
        with contextlib.suppress(Exception):
            _ray().kill(self._actor, no_restart=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_flag, (self._actor,))  # a worker starts with a fresh local view


def _install_pydvl_flag(backend_class: type) -> None:
    """Make pyDVL's ``make_parallel_flag()`` hand out a ``RayFlag`` under ``backend_class``.

    ``make_parallel_flag`` looks ``MultiprocessingFlag`` up in its module at every call, so
    that name is replaced by a subclass whose ``create()`` asks which backend is active: every
    other backend still gets pyDVL's own flag. Idempotent; a pyDVL without these names (other
    than 0.10) is left alone, and the first fit on Ray then says what failed.
    """
    try:
        import pydvl.valuation.parallel as parallel
    except ImportError:
        return
    original: Any = getattr(parallel, "MultiprocessingFlag", None)
    active: Any = getattr(parallel, "_get_active_backend", None)
    if original is None or active is None or getattr(original, "_expcache", False):
        return

    class MultiprocessingFlag(original):  # type: ignore[misc]
        _expcache = True

        @classmethod
        def create(cls) -> Any:
            if isinstance(active()[0], backend_class):
                return RayFlag.create()
            return original.create()

    MultiprocessingFlag.__doc__ = original.__doc__
    vars(parallel)["MultiprocessingFlag"] = MultiprocessingFlag


# ----------------------------------------------------------------------------- joblib
def register() -> type:
    """Register joblib's ``"ray"`` backend (a ``RayBackend`` that returns generators) and the
    pyDVL stop flag that works on it; returns the backend class. Idempotent."""
    global _backend_class
    if _backend_class is None:
        _ray()
        from joblib import register_parallel_backend
        from ray.util.joblib.ray_backend import RayBackend

        class ExpcacheRayBackend(RayBackend):
            """``RayBackend`` declaring what it does: results as they come (generators)."""

            supports_return_generator = True

        register_parallel_backend(JOBLIB_NAME, ExpcacheRayBackend)
        _backend_class = ExpcacheRayBackend
    else:
        from joblib import register_parallel_backend

        register_parallel_backend(JOBLIB_NAME, _backend_class)  # another may have replaced it
    _install_pydvl_flag(_backend_class)
    return _backend_class


def _connect(address: str | None, init: Mapping[str, Any] | None) -> bool:
    """Connect this process to Ray; True if this call started the connection (and so owns
    its ``ray.shutdown()``). Inside a Ray task (the Hydra Ray launcher's jobs) the worker is
    connected already and the address is not used."""
    ray = _ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = dict(init or {})
    env = {k: v for k, v in _WORKER_ENV.items() if k not in os.environ}
    if env:
        runtime_env = dict(options.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**env, **dict(runtime_env.get("env_vars") or {})}
        options["runtime_env"] = runtime_env
    if address is None:
        # Not Ray's own rule for None, which also joins whatever cluster `ray start` last
        # left running on this machine: a run joins a cluster only when it is told to.
        address = os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        options = {**_LOCAL_INIT, **options}
    ray.init(address=address, **options)
    return True


# Ray's pool actors ask for no CPU (``num_cpus=0``), so Ray may pack every worker of a fit onto
# one node (seen here: three of three on the head). Spreading them uses the cluster. Asking for
# one CPU each would too, but would stall a fit whose driver already holds a CPU (a Ray
# launcher's job): the pool sends batches round-robin, also to an actor that never starts.
_WORKER_ACTOR: Mapping[str, Any] = {"scheduling_strategy": "SPREAD"}


@contextlib.contextmanager
def joblib_on_ray(
    address: str | None = None,
    *,
    n_jobs: int = -1,
    init: Mapping[str, Any] | None = None,
    worker: Mapping[str, Any] | None = None,
) -> Iterator[list[str]]:
    """joblib (and so pyDVL) on Ray for the ``with`` block; yields the cluster's hosts.

    ``address``: ``"local"`` starts a Ray on this machine for the block, ``None`` too unless
    ``RAY_ADDRESS`` names a cluster, ``"auto"`` joins the one ``ray start`` runs here,
    ``"host:port"`` or ``"ray://host:10001"`` joins a cluster; a process already connected
    (a Ray task) stays on its cluster. ``n_jobs=-1`` uses every
    CPU of the cluster. ``init`` goes to ``ray.init``; ``worker`` are the Ray options of each
    pool worker (default: spread over the nodes). Only a connection made here is shut down
    on exit.
    """
    import joblib

    ray = _ray()
    # Ray's backend re-parents joblib's PicklingPool onto Ray's Pool when it configures, for
    # good: joblib's multiprocessing backend in this process would then run on Ray (starting
    # one after the block). The class is given back its bases when the block ends.
    from joblib.pool import PicklingPool

    bases = PicklingPool.__bases__
    owned = _connect(address, init)
    try:
        register()
        remote = dict(_WORKER_ACTOR if worker is None else worker)
        with joblib.parallel_config(backend=JOBLIB_NAME, n_jobs=n_jobs, ray_remote_args=remote):
            yield cluster_hosts()
    finally:
        PicklingPool.__bases__ = bases
        if owned:
            ray.shutdown()


def cluster_hosts() -> list[str]:
    """The distinct hosts of the connected cluster's live nodes, as ``hostname (ip)``.

    Two nodes are one host when both their IP address and their host name agree: nodes
    started side by side on one machine (``ray.cluster_utils.Cluster``) share its disk and
    shared memory; containers with the host's network but their own file systems do not.
    """
    ray = _ray()
    seen = {
        (str(n.get("NodeManagerHostname", "")), str(n.get("NodeManagerAddress", "")))
        for n in ray.nodes()
        if n.get("Alive", n.get("alive", False))
    }
    return [f"{name} ({ip})" for name, ip in sorted(seen)]


# ----------------------------------------------------------------------------- reach
_SCOPE_TEXT = {"process": "one process", "host": "the processes of one host"}


def check_reach(
    backend: Backend | type[Backend],
    hosts: Sequence[str] | None,
    *,
    where: str,
    strict: bool = False,
) -> str | None:
    """Warn when ``backend``'s entries cannot reach every host of a run; the warning text.

    ``hosts`` are the hosts the run spans, or ``None`` when they cannot be counted but may be
    several (a SLURM launcher); ``where`` names what spans them (``"the Ray cluster at
    ..."``). With ``strict`` (the app's ``cache.strict``) it raises ``BackendUnavailable``
    instead: a run that asked for its cache must not silently get one cache per host.
    """
    scope = backend.scope
    name = getattr(backend, "name", None) or getattr(backend, "__name__", "backend")
    if scope == "network" or name == "none" or (hosts is not None and len(hosts) <= 1):
        return None  # shared by every host, or nothing stored to share (cache=none)
    if hosts is None:
        spans = f"{where} may run its jobs on several hosts"
    else:
        shown = ", ".join(hosts[:4]) + (", ..." if len(hosts) > 4 else "")
        spans = f"{where} spans {len(hosts)} hosts ({shown})"
    text = (
        f"cache: {name} is seen by {_SCOPE_TEXT.get(scope, scope)} only, but {spans}: each "
        "host gets a cache of its own and their workers share nothing; use cache=memcached "
        "with servers every host reaches"
    )
    if strict:
        raise BackendUnavailable(f"{text}, or set cache.strict=false to run anyway")
    log.warning("expcache: %s (cache.strict=true makes this an error)", text)
    return text
