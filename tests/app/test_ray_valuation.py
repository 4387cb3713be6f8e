"""``parallel.backend=ray``: the valuation's pyDVL workers on the session's Ray cluster.

The cluster (tests/conftest.py) has a head, a second node and a node with a host of its own,
one CPU each: Ray's pool puts one worker on each. Runs go through ``run(cfg)`` in this
process, which joins the cluster through ``parallel.address`` and leaves it at the end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from expcache.app import plan, run
from expcache.errors import BackendUnavailable, ConfigError
from expcache.integrations import ray as xray

from ..conftest import MemcachedServer, RayCluster
from .conftest import Compose

pytestmark = [
    pytest.mark.pydvl,
    pytest.mark.usefixtures("need_pydvl"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

# LOO on 20 points: u(N) and the 20 leave-one-out subsets, whatever the order.
LOO = ("data=iris", "data.train_size=20", "policy.time_threshold=0", "method=loo")
N_CALLS = 21


@pytest.fixture
def compose_valuation(compose_raw: Compose) -> Compose:
    return lambda *overrides: compose_raw("task=valuation", "task.plot=false", *overrides)


def _on_ray(cluster: RayCluster) -> tuple[str, ...]:
    return ("parallel=ray", f"parallel.address={cluster.address}")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("parallel.address=127.0.0.1:6379", "parallel.address"),  # without backend=ray
        ("parallel.address=http://head:6379", "parallel.address"),
        ("parallel.backend=dask", "parallel.backend"),
    ],
)
def test_bad_parallel_options_name_their_key(
    compose_valuation: Compose, override: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan(compose_valuation(override))


def test_parallel_ray_plans_without_connecting(compose_valuation: Compose) -> None:
    p = plan(compose_valuation("parallel=ray", "parallel.address=ray://head:10001"))
    parallel = p.task.parallel  # type: ignore[attr-defined]
    assert (parallel.backend, parallel.n_jobs, parallel.address) == ("ray", -1, "ray://head:10001")


@pytest.mark.slow
@pytest.mark.memcached
def test_valuation_on_ray_equals_the_sequential_one_and_counts_every_worker(
    compose_valuation: Compose,
    ray_cluster: RayCluster,
    memcached: MemcachedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ray places the pool's workers where it likes (spread is best effort: a run here once had
    # none on the other host). One CPU each on these 1-CPU nodes pins one worker per node, so
    # the other host's reporting channel is asserted, not assumed.
    monkeypatch.setattr(xray, "_WORKER_ACTOR", {"num_cpus": 1})
    on_memcached = ("cache=memcached", f"cache.servers=[{memcached.address}]")
    incrs = memcached.stat("incr_hits") + memcached.stat("incr_misses")
    alone = run(compose_valuation(*LOO, "cache=none"), output_dir=tmp_path / "alone")
    cold = run(
        compose_valuation(*LOO, *on_memcached, *_on_ray(ray_cluster)), output_dir=tmp_path / "cold"
    )
    warm = run(
        compose_valuation(*LOO, *on_memcached, *_on_ray(ray_cluster)), output_dir=tmp_path / "warm"
    )
    assert cold["results"]["values"] == alone["results"]["values"]  # LOO: order-free
    assert warm["results"]["values"] == alone["results"]["values"]
    c = cold["cache_stats"]["functions"]["pydvl_utility"]
    w = warm["cache_stats"]["functions"]["pydvl_utility"]
    assert (c["calls"], c["misses"], c["sets"]) == (N_CALLS, N_CALLS, N_CALLS)
    assert (w["calls"], w["hits"], w["misses"]) == (N_CALLS, N_CALLS, 0)
    for r in (cold, warm):
        # one pool worker per node reported, and nothing was lost on the way
        assert r["results"]["cache"]["worker_processes"] == len(ray_cluster.resources)
        assert r["results"]["cache"]["complete"] is True
        assert r["cache_stats"]["total"]["calls"] == N_CALLS  # counted once
    if ray_cluster.other_host is not None:
        # The other host cannot see the run's ledger folder, so its worker reported through
        # memcached: one slot per run, allocated with incr (nothing else here counts with it).
        incrs = memcached.stat("incr_hits") + memcached.stat("incr_misses") - incrs
        assert incrs == 2


@pytest.mark.slow
def test_a_disk_cache_on_a_cluster_of_several_hosts_is_warned_about_or_refused(
    compose_valuation: Compose,
    ray_cluster: RayCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ray_cluster.require_other_host()
    disk = ("cache=disk", f"cache.directory={tmp_path / 'disk'}")
    strict = compose_valuation(*LOO, *disk, *_on_ray(ray_cluster), "cache.strict=true")
    with pytest.raises(BackendUnavailable, match=r"spans 2 hosts.*cache\.strict=false"):
        run(strict, output_dir=tmp_path / "strict")
    assert not (tmp_path / "strict" / "values.csv").exists()  # refused before any work
    with caplog.at_level(logging.WARNING, logger="expcache"):
        done = run(
            compose_valuation(*LOO, *disk, *_on_ray(ray_cluster)), output_dir=tmp_path / "warned"
        )
    warned = [r.getMessage() for r in caplog.records if "spans 2 hosts" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert "disk is seen by the processes of one host only" in warned[0]
    assert "expcache-host2" in warned[0]
    assert done["results"]["n_points"] == 20  # a warning, not a failure
    # the other host's worker had nowhere to report: the run says its counts are incomplete
    assert done["results"]["cache"]["complete"] is False
    assert "spans 2 hosts" in done["cache_stats"]["backend"]["unreached_hosts"]
    # cache=none stores nothing, so there is nothing to share: no warning, even when strict
    none = compose_valuation(*LOO, "cache=none", *_on_ray(ray_cluster), "cache.strict=true")
    assert run(none, output_dir=tmp_path / "none")["results"]["n_points"] == 20
