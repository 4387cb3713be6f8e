"""Issue 14, the Python API: scoped clear, per-call control, explain-a-miss, inventory, archives.

Against a real memcached (one server and the 3-node cluster fixture) and the disk cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from expcache import DiskBackend, MemcachedBackend, Memoized, RepetitionPolicy
from expcache.archive import ArchiveError, export_archive, import_archive
from expcache.backends import Backend
from expcache.inventory import list_functions
from expcache.serde import Serde

from .conftest import MemcachedServer


@pytest.fixture(params=["memcached", "cluster", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memcached":
        server: MemcachedServer = request.getfixturevalue("memcached")
        return MemcachedBackend([server.address], timeout=5)
    if request.param == "cluster":
        nodes: list[MemcachedServer] = request.getfixturevalue("memcached_cluster")
        return MemcachedBackend([n.address for n in nodes], timeout=5)
    return DiskBackend(tmp_path / "cache")


def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


# -- scoped invalidation and per-call control ----------------------------------------------------
def test_cache_clear_deletes_only_this_functions_entries(store: Backend) -> None:
    a = Memoized(double, store, namespace="team")
    b = Memoized(triple, store, namespace="team")
    other_ns = Memoized(double, store, namespace="colleague")
    for x in range(5):
        a(x), b(x), other_ns(x)
    removed = a.cache_clear()
    assert removed >= 5
    assert not any(a.check_call_in_cache(x) for x in range(5))
    assert all(b.check_call_in_cache(x) for x in range(5))  # another function: kept
    assert all(other_ns.check_call_in_cache(x) for x in range(5))  # another namespace: kept
    assert a.stats.calls == 0


def test_cache_clear_never_flushes_the_server(memcached: MemcachedServer) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    a = Memoized(double, backend)
    a(1)
    before = memcached.stat("cmd_flush")
    a.cache_clear()
    assert memcached.stat("cmd_flush") == before


def test_invalidate_refresh_precache(store: Backend) -> None:
    ran: list[int] = []

    def f(x: int) -> int:
        ran.append(x)
        return x + 100

    m = Memoized(f, store, signature=b"ops", name="ops")
    assert m(1) == 101 and ran == [1]
    m.invalidate(1)
    assert not m.check_call_in_cache(1)
    assert m(1) == 101 and ran == [1, 1]
    assert m.refresh(1) == 101 and ran == [1, 1, 1]  # recomputed whatever is stored
    m.precache(-5, 2)
    assert m(2) == -5 and ran == [1, 1, 1]  # answered from the primed value
    assert m.stats.hits == 1


def test_refresh_restarts_running_moments(store: Backend) -> None:
    values = iter([1.0, 2.0, 3.0, 10.0])
    m = Memoized(lambda: next(values), store, repeat=RepetitionPolicy(min_repetitions=5),
                 signature=b"moments")
    m(), m(), m()
    assert m.moments().n == 3  # type: ignore[union-attr]
    assert m.refresh() == 10.0
    assert m.moments().n == 1  # type: ignore[union-attr]


# -- explain --------------------------------------------------------------------------------------
def make(source: str, **globals_: Any) -> Any:
    """A function of a pretend user module ``explain_demo``: edit its source, change a global
    or a closure, and it is "the same function" (same label) with another identity."""
    namespace: dict[str, Any] = {"__name__": "explain_demo", **globals_}
    exec(source, namespace)
    return namespace["utility"]


def test_explain_names_the_part_that_changed(store: Backend) -> None:
    v1 = make("def helper(x):\n    return x\n\ndef utility(x):\n    return helper(x) * SCALE\n",
              SCALE=2)
    Memoized(v1, store, time_threshold=0)(3)  # stored: its manifest records identity v1
    cases = {
        "global 'SCALE'": make(
            "def helper(x):\n    return x\n\ndef utility(x):\n    return helper(x) * SCALE\n",
            SCALE=3,
        ),
        "called function helper()": make(
            "def helper(x):\n    return x + 1\n\ndef utility(x):\n    return helper(x) * SCALE\n",
            SCALE=2,
        ),
        "the function's code changed": make(
            "def helper(x):\n    return x\n\ndef utility(x):\n    return -helper(x) * SCALE\n",
            SCALE=2,
        ),
    }
    for expected, fn in cases.items():
        report = Memoized(fn, store).explain(3)
        assert report.status == "miss"
        assert expected in str(report), str(report)
    same = Memoized(v1, store)
    assert same.explain(3).would_hit
    argument = same.explain(4)
    assert argument.status == "miss" and argument.differing_arguments == ["x"]
    assert "argument(s) 'x'" in str(argument)


def test_explain_names_a_closure_variable_and_a_namespace(store: Backend) -> None:
    def build(k: int) -> Any:
        def utility(x: int) -> int:
            return x * k

        return utility

    Memoized(build(1), store, time_threshold=0, name="closure-demo")(2)
    report = Memoized(build(2), store, name="closure-demo").explain(2)
    assert "closure variable 'k'" in str(report) and report.differing_parts == ["closure k"]
    elsewhere = Memoized(build(1), store, name="closure-demo", namespace="other").explain(2)
    assert elsewhere.status == "miss" and "namespace 'other'" in str(elsewhere)


def test_a_miss_logs_which_part_differs_at_debug(
    store: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    src = "def utility(x):\n    return x * SCALE\n"
    Memoized(make(src, SCALE=1), store, time_threshold=0)(1)
    with caplog.at_level("DEBUG", logger="expcache"):
        Memoized(make(src, SCALE=5), store, time_threshold=0)(1)
    assert any("global SCALE differ" in r.getMessage() for r in caplog.records)


def test_the_manifest_is_written_once_per_process_and_function(
    memcached: MemcachedServer,
) -> None:
    backend = MemcachedBackend([memcached.address], timeout=5)
    m = Memoized(double, backend, time_threshold=0)
    m(1)  # the first miss also reads and writes the manifest
    sets, gets = memcached.stat("cmd_set"), memcached.stat("cmd_get")
    for x in range(2, 12):
        m(x)  # ten more misses: lookup; lease add, value set, lease marker -- nothing else
    assert memcached.stat("cmd_get") - gets == 10
    assert memcached.stat("cmd_set") - sets == 30
    gets = memcached.stat("cmd_get")
    for x in range(2, 12):
        m(x)  # hits: one get each, nothing else
    assert memcached.stat("cmd_get") - gets == 10


# -- inventory ------------------------------------------------------------------------------------
def test_list_functions_counts_entries_bytes_and_saved_seconds(store: Backend) -> None:
    a = Memoized(double, store, namespace="inv", time_threshold=0)
    b = Memoized(triple, store, namespace="inv", time_threshold=0,
                 repeat=RepetitionPolicy(min_repetitions=2))
    for x in range(4):
        a(x)
    b(1), b(1)
    rows = {r.function: r for r in list_functions(store, Serde(), "inv")}
    assert set(rows) == {f"{__name__}.double", f"{__name__}.triple"}
    ra, rb = rows[f"{__name__}.double"], rows[f"{__name__}.triple"]
    assert (ra.entries, ra.values, ra.moments, ra.unverified) == (4, 4, 0, 0)
    assert (rb.entries, rb.moments) == (1, 1)
    assert ra.bytes > 0 and ra.oldest is not None and ra.newest is not None
    assert ra.oldest <= ra.newest and ra.compute_seconds >= 0
    assert list_functions(store, Serde(), "nothing-here") == []


def test_unverifiable_entries_are_counted_not_decoded(store: Backend) -> None:
    signed = Memoized(double, store, namespace="sig", signing_key="s" * 16, time_threshold=0)
    signed(1)
    rows = list_functions(store, Serde(), "sig")  # no key: HMACs cannot be checked
    assert [(r.entries, r.unverified, r.function) for r in rows] == [(1, 1, "?")]


# -- archives -------------------------------------------------------------------------------------
def test_memcached_to_a_file_and_back_after_a_restart(
    memcached_factory: Any, tmp_path: Path
) -> None:
    server = memcached_factory()
    backend = MemcachedBackend([server.address], timeout=5)
    ran: list[int] = []

    def slow(x: int) -> int:
        ran.append(x)
        return x * x

    m = Memoized(slow, backend, namespace="week", signature=b"slow", time_threshold=0)
    r = Memoized(lambda: 1.5, backend, namespace="week", name="noisy", time_threshold=0,
                 repeat=RepetitionPolicy(min_repetitions=2))
    for x in range(20):
        m(x)
    r(), r()
    report = export_archive(backend, Serde(), tmp_path / "week.xca", "week")
    assert report.entries == 21 and report.manifests == 2
    server.restart()  # a week of results gone from memory ...
    backend.close()
    assert not m.check_call_in_cache(3)
    imported = import_archive(backend, Serde(), tmp_path / "week.xca")
    assert imported.imported == 23 and imported.kept == 0
    assert [m(x) for x in range(20)] == [x * x for x in range(20)] and len(ran) == 20
    assert r.moments().n == 2  # type: ignore[union-attr]  # running moments came back
    again = import_archive(backend, Serde(), tmp_path / "week.xca")
    assert (again.imported, again.kept) == (0, 23)  # importing twice adds nothing


def test_one_machines_disk_cache_into_anothers(tmp_path: Path) -> None:
    here, there = DiskBackend(tmp_path / "here"), DiskBackend(tmp_path / "there")
    m = Memoized(double, here, time_threshold=0)
    for x in range(10):
        m(x)
    export_archive(here, Serde(), tmp_path / "a.xca", None)
    import_archive(there, Serde(), tmp_path / "a.xca")
    moved = Memoized(double, there)
    assert all(moved.check_call_in_cache(x) for x in range(10))


def _archive(tmp_path: Path, signing_key: str | None = None) -> tuple[Path, DiskBackend]:
    src = DiskBackend(tmp_path / "src")
    m = Memoized(double, src, time_threshold=0, signing_key=signing_key)
    for x in range(6):
        m(x)
    path = tmp_path / "src.xca"
    export_archive(src, Serde(signing_key), path, None)
    return path, DiskBackend(tmp_path / "dst")


def test_a_truncated_archive_imports_only_what_verifies(tmp_path: Path) -> None:
    path, dst = _archive(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.xca"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated") as info:
        import_archive(dst, Serde(), cut)
    imported = int(str(info.value).rsplit("imported ", 1)[1].split()[0])
    keys = list(dst.iter_keys())
    assert len(keys) == imported < 7
    for key in keys:  # whatever was written is whole and verifies
        Serde().verify(key, dst.get(key))  # type: ignore[arg-type]


def test_an_archive_signed_with_another_key_writes_nothing(tmp_path: Path) -> None:
    path, dst = _archive(tmp_path, signing_key="a" * 16)
    with pytest.raises(ArchiveError, match="signed"):
        import_archive(dst, Serde(), path)  # no key at all
    with pytest.raises(ArchiveError, match="another key"):
        import_archive(dst, Serde("b" * 16), path)
    assert list(dst.iter_keys()) == []
    assert import_archive(dst, Serde("a" * 16), path).imported == 7


@pytest.mark.parametrize("damage", ["magic", "format", "flipped"])
def test_damaged_archives_are_refused_with_the_reason(tmp_path: Path, damage: str) -> None:
    path, dst = _archive(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "magic":
        data[:8] = b"NOTANARC"
    elif damage == "format":
        data[9] = 99
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    match = {"magic": "not an expcache archive", "format": "format 99",
             "flipped": "corrupt"}[damage]
    with pytest.raises(ArchiveError, match=match):
        import_archive(dst, Serde(), path)
    for key in dst.iter_keys():
        Serde().verify(key, dst.get(key))  # type: ignore[arg-type]


def test_export_leaves_out_entries_that_do_not_verify(tmp_path: Path) -> None:
    """A shared store also holds a colleague's entries signed with another key and garbage:
    exported as they were, the first of them stopped every import of the archive."""
    src = DiskBackend(tmp_path / "src")
    mine = Memoized(double, src, time_threshold=0)
    for x in range(3):
        mine(x)
    Memoized(triple, src, time_threshold=0, signing_key="c" * 16)(1)  # a colleague's key
    src.set("ex3:000000000000:" + "0" * 32, b"garbage")
    report = export_archive(src, Serde(), tmp_path / "a.xca", None)
    dst = DiskBackend(tmp_path / "dst")
    assert import_archive(dst, Serde(), tmp_path / "a.xca").imported == 4  # 3 + the manifest
    assert all(Memoized(double, dst).check_call_in_cache(x) for x in range(3))
    assert (report.entries, report.manifests, report.skipped) == (3, 1, 3)
