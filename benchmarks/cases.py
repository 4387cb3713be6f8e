"""The rows of the benchmark: floors, expcache's paths, and the peers, built over one server.

Every row is one zero-argument callable doing one "call" as a user would see it. Floors are
measured on the very bytes expcache stores (the raw ``get`` reads expcache's own entry under
expcache's own key), so a row's excess over its floor is expcache's work, not a different
payload.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import xxhash
from pymemcache.client.base import Client

from _measure import Case
from expcache import (
    DiskBackend,
    MemcachedBackend,
    Memoized,
    MemoryBackend,
    RepetitionPolicy,
    memcached,
)

__all__ = ["ARRAY_SIZE", "SMALL_ARGS", "build_cases"]

ARRAY_SIZE = 100_000
SMALL_ARGS: tuple[Any, ...] = (7, 0.5, "abc")
BATCH = 100


# The memoized functions are trivial on purpose: the rows measure the cache, not the work.
def small_fn(i: int, x: float, tag: str) -> float:
    return i * x


def array_fn(a: np.ndarray[Any, Any], scale: float = 1.0) -> float:
    return scale


def miss_fn(i: int) -> int:
    return i


def noisy_fn(i: int) -> float:
    return random.random()


def _server_tuple(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _raw_client(address: str) -> Client:
    return Client(_server_tuple(address), no_delay=True, default_noreply=False)


def build_cases(address: str, tmp: Path, *, with_pydvl: bool = True) -> tuple[list[Case], list[str]]:
    """All rows over the server at ``address`` and disk caches under ``tmp``; plus notes."""
    notes: list[str] = []
    array = np.random.default_rng(0).random(ARRAY_SIZE)
    raw = _raw_client(address)
    mc = MemcachedBackend(address)
    cases: list[Case] = [
        Case("timer", "perf_counter_ns pair around an empty call (timer overhead)", lambda: None)
    ]

    # -- memcached hit: small arguments, and its floor -------------------------------------------
    hit_small = Memoized(small_fn, mc, time_threshold=0)
    hit_small(*SMALL_ARGS)
    small_key = hit_small.cache_key(*SMALL_ARGS)
    assert raw.get(small_key) is not None, "expcache did not store the small-args entry"
    cases += [
        Case("raw_get", "raw pymemcache Client.get (no_delay) of expcache's entry: the floor",
             lambda: raw.get(small_key)),
        Case("xc_hit_small", "expcache hit, memcached, small args (7, 0.5, 'abc')",
             lambda: hit_small(*SMALL_ARGS), reference="raw_get", target=1.1),
        Case("xc_key_small", "expcache key derivation alone, small args",
             lambda: hit_small.cache_key(*SMALL_ARGS), reference="raw_get"),
    ]

    # -- the pyDVL 0.7-style decorator (pickle_args="warn"): the same hit through compat ----------
    seed = memcached(client_config={"server": _server_tuple(address)}, time_threshold=0)(small_fn)
    seed(*SMALL_ARGS)
    assert seed.stats.sets == 1, "the seed decorator did not store its entry"
    cases.append(Case("xc_hit_seed", "expcache.memcached (pyDVL 0.7 decorator) hit, small args",
                      lambda: seed(*SMALL_ARGS), reference="raw_get"))

    # -- memcached hit: a 1e5-float64 array argument ----------------------------------------------
    hit_array = Memoized(array_fn, mc, time_threshold=0)
    hit_array(array)
    buffer = array.data  # the same bytes keys.py hashes
    cases += [
        Case("xc_hit_array", "expcache hit, memcached, 1e5-float64 array arg",
             lambda: hit_array(array), reference="raw_get", target=1.3),
        Case("xc_key_array", "expcache key derivation alone, 1e5-float64 array arg",
             lambda: hit_array.cache_key(array), reference="raw_get"),
        Case("xxh3_array", "xxh3-128 over the array's buffer (what hashing it can cost)",
             lambda: xxhash.xxh3_128_digest(buffer), reference="raw_get"),
    ]

    # -- the same hit without I/O: what expcache's Python costs on its own --------------------------
    hit_mem = Memoized(small_fn, MemoryBackend(), time_threshold=0)
    hit_mem(*SMALL_ARGS)
    cases.append(Case("xc_hit_memory", "expcache hit, in-process memory backend, small args",
                      lambda: hit_mem(*SMALL_ARGS), reference="raw_get"))

    # -- memcached miss: fresh keys every call (get miss + run + set [+ lease add/delete]) --------
    counter = itertools.count(1)
    entry = raw.get(small_key)
    assert entry is not None

    def raw_miss() -> None:
        key = f"rawmiss:{next(counter)}"
        raw.get(key)
        raw.set(key, entry, noreply=False)

    miss_lease = Memoized(miss_fn, mc, time_threshold=0, lease=True)
    miss_nolease = Memoized(miss_fn, mc, time_threshold=0, lease=False)
    cases += [
        Case("raw_get_set", "raw get (miss) + set (with reply) of a fresh key: the miss floor",
             raw_miss, reference="raw_get"),
        Case("xc_miss", "expcache miss, lease off: get + run + set",
             lambda: miss_nolease(next(counter)), reference="raw_get_set"),
        Case("xc_miss_lease", "expcache miss, lease on: get + add lease + run + set + delete",
             lambda: miss_lease(next(counter)), reference="raw_get_set"),
    ]

    # -- stochastic mode: every call folds a sample into the running moments (gets + cas) ---------
    stochastic = Memoized(
        noisy_fn, mc, repeat=RepetitionPolicy(min_repetitions=10**9), max_cas_retries=5
    )
    stochastic(1)
    stoch_key = stochastic.cache_key(1)
    payload = raw.get(stoch_key)
    assert payload is not None
    raw.set("rawcas", payload, noreply=False)

    def raw_gets_cas() -> None:
        _, token = raw.gets("rawcas")
        raw.cas("rawcas", payload, token, noreply=False)

    # ... and once converged, a stochastic call is a hit: gets + the stopping rule, no run.
    converged = Memoized(
        noisy_fn, mc, repeat=RepetitionPolicy(min_repetitions=3, rtol_stderr=100.0)
    )
    for _ in range(3):
        converged(2)
    assert converged.check_call_in_cache(2), "the stochastic entry did not converge"
    cases += [
        Case("raw_gets_cas", "raw gets + cas of an entry of the same size: the update floor",
             raw_gets_cas, reference="raw_get"),
        Case("xc_stochastic", "expcache stochastic-mode update: gets + run + cas",
             lambda: stochastic(1), reference="raw_gets_cas"),
        Case("xc_stochastic_hit", "expcache stochastic mode, converged: gets + stopping rule",
             lambda: converged(2), reference="raw_get"),
    ]

    # -- batched lookup: 100 cached calls ---------------------------------------------------------
    batch = Memoized(small_fn, mc, time_threshold=0, namespace="batch")
    calls = [(i, 0.5, "abc") for i in range(BATCH)]
    batch.map(calls)
    batch_keys = [batch.cache_key(*c) for c in calls]
    assert len(raw.get_many(batch_keys)) == BATCH, "expcache did not store the batch"
    cases += [
        Case("raw_get_many_100", "raw Client.get_many of the same 100 keys: the batch floor",
             lambda: raw.get_many(batch_keys), reference="raw_get"),
        Case("xc_map_100", "expcache Memoized.map over 100 cached calls (one get_many)",
             lambda: batch.map(calls), reference="raw_get_many_100", target=1.3),
    ]

    # -- disk: expcache's DiskBackend vs diskcache's own memoize, same filesystem -----------------
    disk = DiskBackend(tmp / "expcache-disk")
    hit_disk = Memoized(small_fn, disk, time_threshold=0)
    hit_disk(*SMALL_ARGS)
    disk_key = hit_disk.cache_key(*SMALL_ARGS)
    dc = diskcache.Cache(str(tmp / "diskcache-memoize"))
    dc_fn = dc.memoize()(small_fn)
    dc_fn(*SMALL_ARGS)
    inner = disk.cache
    cases += [
        Case("diskcache_get", "diskcache Cache.get of expcache's entry (the disk floor)",
             lambda: inner.get(disk_key), reference="diskcache_memoize"),
        Case("diskcache_memoize", "diskcache Cache.memoize hit, small args (the disk peer)",
             lambda: dc_fn(*SMALL_ARGS), reference="raw_get"),
        Case("xc_hit_disk", "expcache hit, disk backend, small args",
             lambda: hit_disk(*SMALL_ARGS), reference="diskcache_memoize", target=1.2),
    ]

    # -- disk miss (issue 17): get + file lock + one set + unlock, vs diskcache's one set ---------
    # A fresh argument every call. The floor stores expcache's own envelope of such a miss (the
    # same bytes, a fresh key each time) with one Cache.set; the peer is diskcache's memoize miss.
    disk_miss = Memoized(miss_fn, disk, time_threshold=0, lease=True)
    fresh = itertools.count(10**9)
    disk_miss(next(fresh))
    sample = disk.get(disk_miss.cache_key(10**9))
    assert sample is not None, "the disk miss did not store its entry"
    set_keys = itertools.count()
    dc_set = diskcache.Cache(str(tmp / "diskcache-set"))
    dc_miss = dc.memoize(name="miss")(miss_fn)
    cases += [
        Case("diskcache_set", "diskcache Cache.set of expcache's miss entry, fresh key: one write",
             lambda: dc_set.set(f"ex3:000000000000:{next(set_keys):032x}", sample)),
        Case("xc_miss_disk", "expcache miss, disk backend, lease on: get + lockf + run + set",
             lambda: disk_miss(next(fresh)), reference="diskcache_set", target=1.2),
        Case("diskcache_memoize_miss", "diskcache Cache.memoize miss, fresh arg (the peer)",
             lambda: dc_miss(next(fresh)), reference="diskcache_set"),
    ]

    # -- pyDVL 0.10's memcached-backed cache, when installed ---------------------------------------
    if with_pydvl:
        peer = _pydvl_cases(address, array)
        if peer is None:
            notes.append("pyDVL not installed: its rows are skipped")
        else:
            cases += peer
    return cases, notes


def _pydvl_cases(address: str, array: np.ndarray[Any, Any]) -> list[Case] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation helper warns on import
            from pydvl.utils.caching.config import CachedFuncConfig
            from pydvl.utils.caching.memcached import (
                MemcachedCacheBackend,
                MemcachedClientConfig,
            )
    except ImportError:
        return None
    backend = MemcachedCacheBackend(MemcachedClientConfig(server=_server_tuple(address)))
    config = CachedFuncConfig(time_threshold=0)
    small: Callable[..., Any] = backend.wrap(small_fn, config=config)
    big: Callable[..., Any] = backend.wrap(array_fn, config=config)
    small(*SMALL_ARGS)
    big(array)
    return [
        Case("pydvl_hit_small", "pyDVL 0.10 MemcachedCacheBackend hit, small args",
             lambda: small(*SMALL_ARGS), reference="raw_get"),
        Case("pydvl_hit_array", "pyDVL 0.10 MemcachedCacheBackend hit, 1e5-float64 array arg",
             lambda: big(array), reference="raw_get"),
    ]
