"""Guarantees 4, 8 and 9 of the core: non-finite samples, ``__main__`` functions in worker
processes, and the small contracts (frozen options, one name per string, one default backend,
failures counted, one log line per incident)."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import expcache
from expcache import (
    DiskBackend,
    MemcachedBackend,
    Memoized,
    RepetitionPolicy,
    memoize,
)
from expcache.backends import Backend

from .conftest import MemcachedFactory, MemcachedServer


# -- guarantee 4: a non-finite sample never poisons the running moments --------------------------
def test_nan_and_inf_samples_are_returned_but_not_folded(any_backend: Backend) -> None:
    samples = iter([math.nan, 1.0, math.inf, -math.inf, 1.1, 0.9] + [5.0] * 200)
    m = Memoized(
        lambda x: next(samples),
        any_backend,
        repeat=RepetitionPolicy(min_repetitions=3, rtol_stderr=0.5, atol_stderr=0.1),
        signature=b"noisy-nan",
    )
    out = [m(1) for _ in range(200)]
    assert math.isnan(out[0]) and out[2] == math.inf and out[3] == -math.inf
    moments = m.moments(1)
    assert moments is not None and moments.n == 3  # 1.0, 1.1, 0.9 folded; nothing else
    assert math.isfinite(moments.mean) and moments.mean == pytest.approx(1.0)
    s = m.stats
    assert s.nonfinite == 3
    assert s.hits == 200 - 6  # converged after the third finite sample: the rule stops
    assert s.evaluations == 6


def test_nonfinite_array_sample_is_not_folded(memcached: MemcachedServer) -> None:
    values = iter([np.array([1.0, np.nan]), np.array([1.0, 2.0]), np.array([1.0, 2.0])])
    m = Memoized(
        lambda: next(values),
        MemcachedBackend([memcached.address], timeout=5),
        repeat=RepetitionPolicy(min_repetitions=2, rtol_stderr=0.1),
        signature=b"nan-array",
    )
    first = m()
    assert np.isnan(first[1])
    m()
    np.testing.assert_array_equal(m(), [1.0, 2.0])
    assert m.stats.nonfinite == 1 and m.moments().n == 2  # type: ignore[union-attr]


def test_nonfinite_warning_is_logged_once(
    any_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    m = Memoized(
        lambda x: math.nan, any_backend, repeat=RepetitionPolicy(), signature=b"all-nan"
    )
    with caplog.at_level(logging.DEBUG, logger="expcache"):
        for _ in range(5):
            assert math.isnan(m(1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "NaN" in r.message]
    assert len(warnings) == 1 and m.stats.nonfinite == 5
    assert m.moments(1) is None  # nothing was ever recorded


# -- guarantee 9: the small contracts ------------------------------------------------------------
def test_options_are_read_only_and_replace_builds_another(any_backend: Backend) -> None:
    m = Memoized(lambda x: x, any_backend, time_threshold=0)
    with pytest.raises(AttributeError, match=r"read-only.*replace\(time_threshold"):
        m.time_threshold = "auto"  # type: ignore[misc]
    assert m(1) == 1  # the next call is not broken
    auto = m.replace(time_threshold="auto")
    assert auto.time_threshold == "auto" and m.time_threshold == 0
    assert auto(2) == 2
    with pytest.raises(expcache.ConfigError, match="time_threshold"):
        m.replace(time_threshold=-1)


def test_ignore_args_string_is_one_name(any_backend: Backend) -> None:
    ran: list[int] = []

    def f(x: int, job_id: int = 0) -> int:
        ran.append(x)
        return x

    m = Memoized(f, any_backend, ignore_args="job_id", signature=b"f-job")
    assert m.ignore_args == ("job_id",)
    assert m(1, job_id=1) == 1 and m(1, job_id=2) == 1
    assert ran == [1]


def test_bare_memoize_shares_one_default_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPCACHE_DIR", str(tmp_path / "default"))

    @memoize
    def a(x: int) -> int:
        return x

    @memoize(time_threshold=0)
    def b(x: int) -> int:
        return x

    assert a.backend is b.backend and isinstance(a.backend, DiskBackend)
    assert a.backend.breaker is b.backend.breaker
    assert a.backend.directory == tmp_path / "default"


def test_a_raising_function_is_counted_and_its_exception_unchanged(any_backend: Backend) -> None:
    class Boom(Exception):
        pass

    err = Boom("x")

    def f(x: int) -> int:
        raise err

    m = Memoized(f, any_backend, signature=b"boom")
    for _ in range(3):
        with pytest.raises(Boom) as info:
            m(1)
        assert info.value is err and info.value.__traceback__ is not None
    s = m.stats
    assert (s.failed, s.calls, s.misses, s.sets, s.hits) == (3, 3, 0, 0, 0)
    assert not m.check_call_in_cache(1)


def test_a_full_store_logs_once_per_incident(
    memcached_factory: MemcachedFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_factory(memory_mb=2, extra_args=("-M",))
    backend = MemcachedBackend([server.address], timeout=5)
    filler = Memoized(lambda i: b"x" * 50_000, backend, signature=b"filler")
    for i in range(80):  # fill the 2 MB server until stores are refused
        filler(i)
    assert filler.stats.errors > 0
    m = Memoized(lambda i: b"y" * 50_000, backend, signature=b"refused")
    caplog.clear()  # the filler's own warning
    with caplog.at_level(logging.DEBUG, logger="expcache"):
        for i in range(20):
            assert m(i) == b"y" * 50_000
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.message for r in warnings]
    assert not [r for r in caplog.records if r.levelno == logging.INFO]  # no "again" noise
    assert m.stats.reconnects == 0 and m.stats.errors == 20 and m.stats.bypassed == 0


# -- guarantee 8: functions defined in __main__ ----------------------------------------------------
SCRIPT = """
import json, multiprocessing, os, sys
import joblib
from expcache import DiskBackend, memoize

backend = DiskBackend(sys.argv[1])

@memoize(backend=backend, time_threshold=0)
def cube(x):
    with open(sys.argv[2], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return x ** 3

def key_of(x):
    return cube.cache_key(x)

if __name__ == "__main__":
    parent = [cube(i) for i in range(4)]  # the parent computes and stores
    out = {"parent_key": cube.cache_key(2)}
    for method in ("spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            out[method] = pool.map(key_of, [2])[0]
            out[method + "_values"] = pool.map(cube, range(4))
    out["loky"] = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(cube)(i) for i in range(4)
    )
    out["loky_keys"] = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(cube.cache_key)(2) for _ in range(2)
    )
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_main_module_function_keeps_its_key_in_workers(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    runs = tmp_path / "runs.log"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache"), str(runs)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["spawn"] == out["forkserver"] == out["parent_key"]
    assert out["loky_keys"] == [out["parent_key"]] * 2
    assert out["spawn_values"] == out["forkserver_values"] == out["loky"] == [0, 1, 8, 27]
    assert len(runs.read_text().splitlines()) == 4  # only the parent's four evaluations


def _plus_one(x: int) -> int:
    return x + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with a thread running
def test_a_forked_child_is_not_stopped_by_a_counter_lock_a_parent_thread_held() -> None:
    """A child inherits every lock as it was at the fork; one held by another parent thread
    mid-call is never released there. The child gets fresh counter locks."""
    from expcache import MemoryBackend

    memo = Memoized(_plus_one, MemoryBackend(), time_threshold=0)
    assert memo(1) == 2
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with memo._rec.lock:  # what a parent thread inside a call holds
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a deadlock ends this child (SIGALRM), never the test run
        code = 1
        try:
            code = 0 if (memo(2), memo(1), memo.stats.hits) == (3, 2, 1) else 2
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
