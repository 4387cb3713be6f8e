"""``values.png`` from the run's cache: a warm re-run writes the stored bytes (identical to a
freshly drawn plot) without importing matplotlib, the plot's entry stays out of the run's
statistics, and nothing that goes wrong in the plot cache fails a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache.app import CacheContext, MemoPolicy
from expcache.app.tasks.valuation import ValuationTask, report
from expcache.backends import DiskBackend, MemcachedBackend, MemoryBackend
from expcache.keys.format import key_prefix, parse_key

from .helpers import REPO, loo_task_params

pytestmark = [
    pytest.mark.pydvl,  # the valuation task's plot: matplotlib comes with the pydvl extra
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

PNG = b"\x89PNG\r\n\x1a\n"


def _table(n: int = 12, *, method: str = "TMC") -> report.ValueTable:
    rng = np.random.default_rng(3)
    rows = [
        report.PointValue(
            position=i,
            name=str(100 + i),
            value=float(v),
            stderr=float("nan") if i == 2 else 0.01 * i,
            count=5,
            label=i % 2,
            noisy=i in (1, 7),
        )
        for i, v in enumerate(rng.normal(size=n))
    ]
    return report.ValueTable(rows, method)


def _cache(ctx: CacheContext) -> Any:
    return report.plot_cache(ctx.wrap_private)


# A fresh interpreter writes the plot through the cache of $CACHE_DIR and reports whether it
# imported matplotlib: the only way to see an import that did not happen.
WRITE_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from pathlib import Path
    from expcache.app import CacheContext
    from expcache.backends import DiskBackend
    from expcache.app.tasks.valuation import report
    sys.path.insert(0, sys.argv[3])
    from tests.app.test_plot_cache import _table
    ctx = CacheContext(DiskBackend(sys.argv[1]), namespace="plots")
    report.write_plot(_table(), Path(sys.argv[2]), "a title", cache=report.plot_cache(ctx.wrap_private))
    print(json.dumps({"matplotlib": "matplotlib" in sys.modules}))
    """
)


def _write_in_a_fresh_process(cache_dir: Path, out: Path) -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_IN_A_FRESH_PROCESS, str(cache_dir), str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported: bool = json.loads(proc.stdout.strip().splitlines()[-1])["matplotlib"]
    return imported


def test_a_second_process_writes_the_same_png_from_the_cache_without_matplotlib(
    tmp_path: Path,
) -> None:
    cache_dir = tmp_path / "cache"
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    assert _write_in_a_fresh_process(cache_dir, first) is True  # drawn
    assert _write_in_a_fresh_process(cache_dir, second) is False  # served
    assert second.read_bytes() == first.read_bytes()
    # ... and both are what drawing gives here, now: byte for byte.
    assert first.read_bytes() == report.render_plot(_table(), "a title")
    assert first.read_bytes().startswith(PNG)


def test_drawing_is_deterministic_and_carries_no_software_chunk() -> None:
    png = report.render_plot(_table(), "a title")
    assert png == report.render_plot(_table(), "a title")
    assert b"Software" not in png and b"Matplotlib version" not in png


def test_the_key_is_every_input_of_the_drawing(tmp_path: Path) -> None:
    ctx = CacheContext(MemoryBackend(), namespace="plots")
    memo = _cache(ctx)
    base = report._render_args(report.PlotInputs.of(_table(), "a title"))
    key = memo.cache_key(*base)
    assert key.startswith(key_prefix("plots", report.PLOT_CACHE_NAME))
    assert key == memo.cache_key(*report._render_args(report.PlotInputs.of(_table(), "a title")))
    changed = [
        report.PlotInputs.of(_table(), "another title"),
        report.PlotInputs.of(_table(method="LOO"), "a title"),
        report.PlotInputs.of(_table(n=11), "a title"),
    ]
    keys = {memo.cache_key(*report._render_args(c)) for c in changed}
    figure = dict(report.FIGURE, dpi=101)
    keys.add(memo.cache_key(*base[:5], figure, base[6]))
    keys.add(memo.cache_key(*base[:6], "0.0-other-matplotlib"))
    assert key not in keys and len(keys) == 5
    # Another format version is another signature: no key of the old one can match.
    bumped = memo.replace(signature=b"expcache.app.tasks.valuation.report.values_png/2")
    assert bumped.cache_key(*base) != key


def test_the_run_s_statistics_never_see_the_plot(tmp_path: Path) -> None:
    """The task twice on one backend: the second plot is a hit of the plot cache, yet the
    records count the utility's calls only."""
    pytest.importorskip("pydvl")
    backend = MemoryBackend()
    params = loo_task_params()
    outs, summaries = [], []
    for run in ("cold", "warm"):
        ctx = CacheContext(backend, MemoPolicy({"time_threshold": 0}))
        out = tmp_path / run
        result = ValuationTask(**params)(ctx=ctx, output_dir=out, seed=3)
        assert result["files"]["plot"] == "values.png"
        outs.append((out / "values.png").read_bytes())
        summaries.append((ctx.summary(), result["cache"]))
        assert set(ctx.identities()) == {"u"}
    assert outs[0] == outs[1] and outs[0].startswith(PNG)
    (cold, _), (warm, _) = summaries
    for summary, cache in summaries:
        assert set(summary["functions"]) == {"u"}
        assert summary["total"] == summary["functions"]["u"]
        assert summary["total"]["calls"] == cache["calls"] == 13  # LOO on 12: 12 + u(N)
    assert warm["total"]["hits"] == 13 and warm["total"]["misses"] == 0
    assert cold["total"]["sets"] == 13  # the plot's store is not one of them
    plot = key_prefix("", report.PLOT_CACHE_NAME)
    entries = [k for k in backend.iter_keys(plot) if not parse_key(k).auxiliary]
    assert len(entries) == 1
    # An entry of the run's namespace like any other: clearing the namespace (what
    # `expcache cache clear` does) removes it.
    backend.clear(key_prefix(""))
    assert list(backend.iter_keys(plot)) == []


def test_a_dead_plot_backend_falls_back_to_drawing(
    tmp_path: Path, memcached_factory: Any
) -> None:
    server = memcached_factory()
    backend = MemcachedBackend([server.address], timeout=0.5)
    server.stop()
    ctx = CacheContext(backend)
    path = report.write_plot(_table(), tmp_path / "values.png", "a title", cache=_cache(ctx))
    assert path.read_bytes() == report.render_plot(_table(), "a title")


def test_a_bad_plot_entry_is_drawn_again_and_replaced(tmp_path: Path) -> None:
    backend = DiskBackend(tmp_path / "cache")
    ctx = CacheContext(backend)
    memo = _cache(ctx)
    args = report._render_args(report.PlotInputs.of(_table(), "a title"))
    expected = report.render_plot(_table(), "a title")
    # An entry that is not a PNG (another program's, a bug's): never written as values.png.
    memo.precache(b"not a png", *args)
    path = report.write_plot(_table(), tmp_path / "a.png", "a title", cache=memo)
    assert path.read_bytes() == expected
    # Corrupt bytes under the key: the memoizer's integrity check rejects them and draws.
    backend.set(memo.cache_key(*args), b"\x00garbage", 0)
    path = report.write_plot(_table(), tmp_path / "b.png", "a title", cache=memo)
    assert path.read_bytes() == expected
    served = report.write_plot(_table(), tmp_path / "c.png", "a title", cache=memo)
    assert served.read_bytes() == expected


def test_a_cache_that_raises_never_fails_the_plot(tmp_path: Path) -> None:
    def broken(*args: Any) -> bytes:
        raise RuntimeError("the cache layer broke")

    path = report.write_plot(_table(), tmp_path / "values.png", "a title", cache=broken)
    assert path.read_bytes() == report.render_plot(_table(), "a title")


def test_the_drawing_s_own_failure_is_raised_not_drawn_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = report._render

    def failing(*args: Any) -> bytes:
        calls.append(args)
        raise ValueError("cannot draw")

    monkeypatch.setattr(report, "_render", failing)
    ctx = CacheContext(MemoryBackend())
    with pytest.raises(ValueError, match="cannot draw"):
        report.write_plot(_table(), tmp_path / "values.png", "a title", cache=_cache(ctx))
    assert len(calls) == 1 and not (tmp_path / "values.png").exists()
    monkeypatch.setattr(report, "_render", real)
    # Nothing was stored for the failure: the next call draws and stores.
    path = report.write_plot(_table(), tmp_path / "values.png", "a title", cache=_cache(ctx))
    assert path.read_bytes().startswith(PNG)


def test_without_wrap_private_the_plot_is_drawn(tmp_path: Path) -> None:
    """A hand-made context with only the task's interface (``CacheContextLike``)."""
    from expcache.app.tasks.valuation.task import _plot_cache

    class Bare:
        backend = MemoryBackend()
        policy = MemoPolicy()

    cache = _plot_cache(Bare(), report)  # type: ignore[arg-type]
    assert cache is None
    path = report.write_plot(_table(), tmp_path / "values.png", "a title", cache=cache)
    assert path.read_bytes() == report.render_plot(_table(), "a title")


# The console script's main() with a hook that records, at exit, whether matplotlib was
# ever imported by the run.
MAIN_WITH_IMPORT_RECORD = textwrap.dedent(
    """
    import atexit, json, sys
    record = sys.argv[1]
    atexit.register(lambda: open(record, "w").write(json.dumps("matplotlib" in sys.modules)))
    sys.argv = ["expcache", *sys.argv[2:]]
    from expcache.app.main import main
    main()
    """
)


@pytest.mark.pydvl
def test_a_warm_rerun_of_the_job_writes_the_plot_without_importing_matplotlib(
    tmp_path: Path,
) -> None:
    pytest.importorskip("pydvl")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    env.update(EXPCACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="1")
    imported, pngs, stats = [], [], []
    for run in ("cold", "warm"):
        out, record = tmp_path / run, tmp_path / f"{run}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                MAIN_WITH_IMPORT_RECORD,
                str(record),
                "task=valuation",
                "data.train_size=20",
                "method.is_done.n_updates=2",
                "policy.time_threshold=0",
                f"hydra.run.dir={out}",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=240,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        imported.append(json.loads(record.read_text()))
        pngs.append((out / "values.png").read_bytes())
        stats.append(json.loads((out / "cache_stats.json").read_text()))
    assert imported == [True, False]
    assert pngs[1] == pngs[0] and pngs[0].startswith(PNG)
    for record in stats:
        assert set(record["functions"]) == {"pydvl_utility"}
        assert record["total"] == record["functions"]["pydvl_utility"]
    cold, warm = (r["total"] for r in stats)
    assert warm["misses"] == 0 and warm["hits"] == cold["calls"] - cold["failed"]
    assert cold["sets"] == cold["misses"]  # every miss stored, and no plot among the stores
