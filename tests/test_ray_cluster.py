"""A real Ray cluster on this machine (``ray_cluster`` in conftest): a head, a second node,
and a node with a host of its own (private /dev/shm, /tmp and host name).

A memoized function shipped to tasks on every node shares its entries through one memcached;
pyDVL's shared-memory stop flag cannot cross to the other host, expcache's Ray flag can.
"""

from __future__ import annotations

from typing import Any

import pytest

from expcache import MemcachedBackend, Memoized

from . import helpers_ray
from .conftest import MemcachedServer, RayCluster

pytestmark = [pytest.mark.slow]

SUBSETS = [tuple(range(i, i + 4)) for i in range(12)]


def _run(cluster: RayCluster, resource: str, fn: Any, *args: Any) -> Any:
    import ray

    task = ray.remote(num_cpus=0)(fn)
    return ray.get(task.options(**cluster.on(resource)).remote(*args), timeout=120)


@pytest.mark.memcached
def test_tasks_on_every_node_share_one_memcached(
    ray_driver: RayCluster, memcached: MemcachedServer
) -> None:
    memo = Memoized(
        helpers_ray.utility,
        MemcachedBackend([memcached.address]),
        time_threshold=0,
        namespace="raynodes",
    )
    first = _run(ray_driver, "head", helpers_ray.evaluate, memo, SUBSETS[:8])
    second = _run(ray_driver, "node2", helpers_ray.evaluate, memo, SUBSETS[4:])
    assert first["node"] != second["node"]
    assert (first["stats"]["misses"], first["stats"]["hits"]) == (8, 0)
    assert (second["stats"]["hits"], second["stats"]["misses"]) == (4, 4)  # 4..7 from head
    outcomes = [first, second]
    if ray_driver.other_host is not None:
        third = _run(ray_driver, ray_driver.other_host, helpers_ray.evaluate, memo, SUBSETS)
        assert third["host"] == "expcache-host2" != first["host"]
        assert (third["stats"]["hits"], third["stats"]["misses"]) == (12, 0)
        outcomes.append(third)
    local = {s: helpers_ray.utility(s) for s in SUBSETS}
    for out, subsets in zip(outcomes, (SUBSETS[:8], SUBSETS[4:], SUBSETS), strict=False):
        assert out["values"] == [local[s] for s in subsets]  # a hit is the computed value
    assert sum(o["stats"]["misses"] for o in outcomes) == len(SUBSETS)  # each computed once


@pytest.mark.pydvl
def test_pydvl_shared_memory_flag_does_not_reach_another_host(ray_driver: RayCluster) -> None:
    """The evidence for README "Running on a cluster": pyDVL 0.10's stop flag is a POSIX
    shared-memory segment of the driver's host, re-opened by name in every task."""
    other = ray_driver.require_other_host()
    import ray
    from pydvl.valuation.parallel import MultiprocessingFlag

    flag = MultiprocessingFlag.create()
    try:
        flag.set()
        same_host = _run(ray_driver, "node2", helpers_ray.read_flag, flag, True, 0)
        assert same_host["value"] is True
        with pytest.raises(ray.exceptions.RayError, match=r"FileNotFoundError|No such file"):
            _run(ray_driver, other, helpers_ray.read_flag, flag, True, 0)
    finally:
        flag.unlink()


def test_ray_flag_reaches_every_node_and_reads_set_once_its_fit_is_over(
    ray_driver: RayCluster,
) -> None:
    import ray

    from expcache.integrations.ray import RayFlag

    target = ray_driver.other_host or "node2"
    flag = RayFlag.create()
    try:
        # on the driver's node: its actor goes only when the fit's own node does
        here = ray.get_runtime_context().get_node_id()
        assert ray.get(flag._actor.node.remote(), timeout=120) == here
        assert _run(ray_driver, target, helpers_ray.read_flag, flag, False, 0)["value"] is False
        flag.set()
        assert flag() is True  # the driver's own copy at once
        seen = _run(ray_driver, target, helpers_ray.read_flag, flag, True)
        assert seen["value"] is True
        flag.reset()
        assert _run(ray_driver, target, helpers_ray.read_flag, flag, False, 0)["value"] is False
    finally:
        flag.unlink()
    # the actor is gone with its fit: a task still holding the flag stops instead of failing
    assert _run(ray_driver, target, helpers_ray.read_flag, flag, True)["value"] is True


@pytest.mark.filterwarnings("ignore::FutureWarning")  # pyDVL's, when the flag is installed
def test_joblib_s_own_pool_is_given_back_after_a_ray_block(ray_driver: RayCluster) -> None:
    """Ray's joblib backend re-parents joblib's PicklingPool onto Ray's Pool when it
    configures: left so, joblib's multiprocessing backend in this process would run on Ray."""
    import joblib
    from joblib.pool import PicklingPool

    from expcache.integrations.ray import joblib_on_ray

    bases = PicklingPool.__bases__
    with joblib_on_ray(ray_driver.address, n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
        assert PicklingPool.__bases__ != bases  # what Ray's backend does while it runs
    assert PicklingPool.__bases__ == bases


def test_cache_none_on_several_hosts_is_not_warned_about() -> None:
    """Nothing is stored, so there is nothing for the hosts to share (even with strict)."""
    from expcache import NullBackend
    from expcache.integrations.ray import check_reach

    hosts = ["a (10.0.0.1)", "b (10.0.0.2)"]
    assert check_reach(NullBackend(), hosts, where="the Ray cluster", strict=True) is None
    assert check_reach(NullBackend, None, where="hydra/launcher=submitit_slurm", strict=True) is None
