"""A Ray worker node that behaves like another machine, for tests on one machine.

``start()`` runs this file inside ``unshare --mount --uts`` with a private ``/dev/shm``, a
private ``/tmp`` and its own host name (``expcache-host2``): what the processes of this node
see of the scratch file system and of POSIX shared memory is their own, as on a second host
(the network is still this machine's loopback). A folder given as ``shared`` is mounted back
in at the same path: the shared file system of a cluster, where sweep folders live; so are
this checkout and its interpreter when they live in /tmp (a clean clone in CI). As a
script it joins the cluster at ``argv[1]`` with the custom resource ``argv[2]`` (so tests can
place tasks on it), prints ``READY <node id>``, and removes its processes when its standard
input closes (``stop()`` closes it). Root only (mount namespaces).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# On Linux, Ray replaces 127.0.0.1 in addresses by the machine's own address; this keeps every
# node, every driver and every connection on loopback.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
HOST_NAME = "expcache-host2"
# The tmpfs sizes bound what the node can use of this machine's memory. Arguments: the host
# name, the folders to keep seeing at their paths (mounted back after the private /tmp: the
# shared sweep folder, and this checkout and its interpreter when they live in /tmp, as a
# clean clone in CI may), "--", then the command.
_NAMESPACE = r"""
set -e
host="$1"; shift
mount -t tmpfs -o size=256m tmpfs /dev/shm
n=0
while [ "$1" != "--" ]; do
  n=$((n + 1)); mkdir "/dev/shm/.keep$n" && mount --bind "$1" "/dev/shm/.keep$n"
  eval "keep$n=\$1"; shift
done
shift
mount -t tmpfs -o size=512m tmpfs /tmp
i=1
while [ "$i" -le "$n" ]; do
  eval "path=\$keep$i"; mkdir -p "$path" && mount --move "/dev/shm/.keep$i" "$path"
  i=$((i + 1))
done
hostname "$host"
exec "$@"
"""


def _kept(shared: Path) -> list[str]:
    """What must stay visible through the private /tmp (outermost folders only)."""
    wanted = [shared, Path(__file__).resolve().parents[1], Path(sys.prefix)]
    under_tmp = [p.resolve() for p in wanted if p.resolve().is_relative_to("/tmp")]
    outer = [p for p in under_tmp if not any(p != q and p.is_relative_to(q) for q in under_tmp)]
    return [str(p) for p in dict.fromkeys(outer)]


def start(address: str, shared: Path, resource: str = "host2") -> subprocess.Popen[str]:
    """Start the node and return once it is up (its process printed READY)."""
    with tempfile.TemporaryFile(mode="w+") as log:  # its stderr, for the error if it fails
        proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                _NAMESPACE,
                "sh",
                HOST_NAME,
                *_kept(shared),
                "--",
                sys.executable,
                __file__,
                address,
                resource,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **LOOPBACK},
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the node is up, or its process ended
        if not line.startswith("READY"):
            proc.kill()
            proc.wait()
            log.seek(0)
            raise RuntimeError(
                f"the other-host Ray node did not start: {line!r}; its stderr:\n"
                f"{log.read()[-3000:]}"
            )
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (it removes its own processes), then make sure, by PID."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    address, resource = sys.argv[1], sys.argv[2]
    params = RayParams(
        gcs_address=address,
        num_cpus=1,
        num_gpus=0,
        object_store_memory=96 * 1024 * 1024,
        resources={resource: 1.0},
        min_worker_port=0,
        max_worker_port=0,
        node_manager_port=0,
    )
    params.dashboard_agent_listen_port = None
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"READY {node.unique_id}", flush=True)
    try:
        sys.stdin.read()
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


if __name__ == "__main__":
    main()
