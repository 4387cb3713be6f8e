"""A Ray worker node that behaves like another machine, for tests on one machine.

``tests/conftest.py`` runs it inside ``unshare --mount --uts`` with a private ``/dev/shm``,
a private ``/tmp`` and its own host name: what the processes of this node see of the file
system's scratch space and of POSIX shared memory is their own, as on a second host (the
network is still this machine's loopback). It joins the cluster at ``argv[1]`` with the
custom resource ``argv[2]`` (so tests can place tasks on it), prints ``READY <node id>``,
and removes its processes when its standard input closes (the fixture closes it).
"""

from __future__ import annotations

import sys

from ray._private.node import Node
from ray._private.parameter import RayParams


def main() -> None:
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
