"""``expcache cache ls/stats/clear/export/import``, through the installed console script.

Every test runs the real script in a subprocess against real stores: memcached processes of
the conftest fixtures (one server, the 3-node cluster, private servers a test kills or
restarts) and disk caches in tmp folders. The caches are filled, and read back afterwards, by
``expcache.memoize`` on the same stores in the test process, so "the entries are back" means
a memoized function hits.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import expcache
from expcache import DiskBackend, MemcachedBackend, RepetitionPolicy
from expcache.backends import Backend
from expcache.serde import Serde

from ..conftest import MemcachedServer
from .helpers import SCRIPT
from .helpers import expcache as run_script

pytestmark = pytest.mark.slow

KEY_A, KEY_B = "a" * 32, "b" * 32


def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


def label(fn: Callable[..., Any]) -> str:
    return f"{__name__}.{fn.__name__}"


@dataclass
class Store:
    """A store the script reaches with ``args`` and the test process with ``backend``."""

    kind: str
    backend: Backend
    args: tuple[str, ...]
    cwd: Path

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        verb, *rest = argv
        return run_script("cache", verb, *rest, *self.args, cwd=self.cwd, env=env)

    def json(self, *argv: str) -> Any:
        proc = self.run(*argv, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def memo(self, fn: Callable[..., Any], **options: Any) -> expcache.Memoized[..., Any]:
        return expcache.memoize(fn, backend=self.backend, time_threshold=0, **options)


def memcached_store(servers: list[MemcachedServer], cwd: Path) -> Store:
    addresses = [s.address for s in servers]
    return Store("memcached", MemcachedBackend(addresses, timeout=5), (
        "cache=memcached", f"cache.servers=[{','.join(addresses)}]", "cache.timeout=5",
    ), cwd)


def disk_store(directory: Path, cwd: Path) -> Store:
    return Store("disk", DiskBackend(directory), (f"cache.directory={directory}",), cwd)


@pytest.fixture(params=["memcached", "cluster", "disk"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memcached":
        s = memcached_store([request.getfixturevalue("memcached")], tmp_path)
    elif request.param == "cluster":
        s = memcached_store(request.getfixturevalue("memcached_cluster"), tmp_path)
    else:
        s = disk_store(tmp_path / "disk", tmp_path)
    yield s
    s.backend.close()


def fill(s: Store) -> dict[str, expcache.Memoized[..., Any]]:
    """Two functions in namespace 'team', one of them also in the default namespace, and a
    stochastic one (running moments) in 'team'."""
    m = {
        "team.double": s.memo(double, namespace="team"),
        "team.triple": s.memo(triple, namespace="team"),
        "default.double": s.memo(double),
        "team.noisy": s.memo(lambda: 1.0, namespace="team", name="noisy",
                             repeat=RepetitionPolicy(min_repetitions=3)),
    }
    for x in range(6):
        m["team.double"](x)
    for x in range(4):
        m["team.triple"](x), m["default.double"](x)
    m["team.noisy"](), m["team.noisy"]()
    return m


def cached(m: expcache.Memoized[..., Any], xs: range) -> list[bool]:
    return [m.check_call_in_cache(x) for x in xs]


def clean(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


# -- ls -----------------------------------------------------------------------------------------
def test_ls_per_namespace_and_function(store: Store) -> None:
    fill(store)
    proc = store.run("ls")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.splitlines()
    assert "every namespace" in table[0]
    assert table[1].split() == ["NAMESPACE", "FUNCTION", "ENTRIES", "MOMENTS", "BYTES",
                                "OLDEST", "NEWEST", "SAVES"]
    rows = {tuple(line.split()[:4]) for line in table[2:-1]}
    assert rows == {
        ("team", label(double), "6", "0"), ("team", label(triple), "4", "0"),
        ("team", "noisy", "1", "1"), ("(default)", label(double), "4", "0"),
    }
    assert table[-1].startswith("4 functions, 15 entries")
    listed = store.json("ls")["functions"]
    by_key = {(r["namespace"], r["function"]): r for r in listed}
    row = by_key[("team", label(double))]
    assert (row["entries"], row["values"], row["moments"], row["unverified"]) == (6, 6, 0, 0)
    assert row["bytes"] > 0 and row["oldest"] <= row["newest"] and row["compute_seconds"] >= 0
    team = store.json("ls", "cache.namespace=team")
    assert team["namespace"] == "team"
    assert {r["function"] for r in team["functions"]} == {label(double), label(triple), "noisy"}


def test_ls_of_an_empty_namespace_says_so(store: Store) -> None:
    fill(store)
    proc = store.run("ls", "cache.namespace=nobody")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("namespace 'nobody': no entries")


# -- stats --------------------------------------------------------------------------------------
def test_stats_reports_items_bytes_and_the_servers_counters(store: Store) -> None:
    fill(store)
    report = store.json("stats")
    assert report["items"] >= 15 and report["bytes"] > 0
    text = store.run("stats").stdout
    if store.kind == "disk":
        assert report["directory"] == str(store.backend.where)
        assert f"disk {store.backend.where}" in text and "size_limit" in text
        return
    nodes = report["nodes"]
    assert len(nodes) == len(store.backend.describe()["servers"])
    assert sum(n["curr_items"] for n in nodes.values()) == report["items"]
    assert all(n["get_hits"] >= 0 and n["version"] for n in nodes.values())
    lines = text.splitlines()
    assert lines[0].endswith(f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}")
    assert all(name in lines[1] for name in nodes)  # one column per node
    assert any(line.split()[0] == "get_hits" for line in lines)


# -- clear --------------------------------------------------------------------------------------
def test_clear_one_namespace(store: Store) -> None:
    m = fill(store)
    proc = store.run("clear", "cache.namespace=team")
    assert proc.returncode == 0, proc.stderr
    assert "namespace 'team'" in proc.stdout
    assert not any(cached(m["team.double"], range(6)) + cached(m["team.triple"], range(4)))
    assert m["team.noisy"].moments() is None
    assert all(cached(m["default.double"], range(4)))  # another namespace: kept


def test_clear_one_function_as_ls_prints_it(store: Store) -> None:
    m = fill(store)
    names = [r["function"] for r in store.json("ls", "cache.namespace=team")["functions"]]
    assert label(double) in names
    proc = store.run("clear", "cache.namespace=team", "--function", label(double))
    assert proc.returncode == 0, proc.stderr
    assert not any(cached(m["team.double"], range(6)))
    assert all(cached(m["team.triple"], range(4)))  # another function: kept
    assert all(cached(m["default.double"], range(4)))  # the same function elsewhere: kept


def test_clear_all_with_yes_empties_the_store(store: Store) -> None:
    m = fill(store)
    proc = store.run("clear", "--all", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert not any(cached(m["team.triple"], range(4)) + cached(m["default.double"], range(4)))
    assert store.json("ls")["functions"] == []


def test_clear_all_is_refused_without_a_terminal_and_without_yes(store: Store) -> None:
    m = fill(store)
    proc = store.run("clear", "--all")  # stdin of a subprocess.run: not a terminal
    assert proc.returncode == 2
    assert "--yes" in clean(proc) and "not a terminal" in proc.stderr
    assert all(cached(m["default.double"], range(4)) + cached(m["team.double"], range(6)))


def test_clear_without_a_scope_is_refused(store: Store) -> None:
    m = fill(store)
    proc = store.run("clear")
    assert proc.returncode == 2
    assert "cache.namespace=NS" in clean(proc) and "--all" in proc.stderr
    assert all(cached(m["default.double"], range(4)))


def on_terminal(argv: list[str], cwd: Path, answer: str | None = None) -> tuple[int, str]:
    """Run the script with stdin/stdout/stderr on a pseudo-terminal (left at 0 x 0, as some
    are); type ``answer`` when it asks. Returns (exit code, everything it printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPCACHE_", "HYDRA_"))}
    env["EXPCACHE_DIR"] = str(cwd / "usercache")
    main, child = pty.openpty()
    proc = subprocess.Popen([str(SCRIPT), *argv], cwd=cwd, env=env, stdin=child,
                            stdout=child, stderr=child, close_fds=True)
    os.close(child)
    out, answered = b"", False
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 120)  # a hang guard, not a measurement
            assert ready, f"no output for 120 s: {out!r}"
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and not answered and b"[y/N]" in out:
                os.write(main, answer.encode() + b"\n")
                answered = True
        return proc.wait(timeout=120), out.decode(errors="replace")
    finally:
        os.close(main)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def test_clear_all_asks_on_a_terminal(memcached: MemcachedServer, tmp_path: Path) -> None:
    s = memcached_store([memcached], tmp_path)
    m = fill(s)
    code, out = on_terminal(["cache", "clear", "--all", *s.args], tmp_path, answer="n")
    assert code == 1 and "[y/N]" in out and "every user of this store" in out
    assert "nothing was cleared" in out
    assert all(cached(m["team.double"], range(6)))
    code, out = on_terminal(["cache", "clear", "--all", *s.args], tmp_path, answer="y")
    assert code == 0, out
    assert not any(cached(m["team.double"], range(6)) + cached(m["default.double"], range(4)))


# -- export / import ------------------------------------------------------------------------
def test_memcached_export_restart_import_and_the_function_hits(
    memcached_factory: Any, tmp_path: Path
) -> None:
    server = memcached_factory()
    s = memcached_store([server], tmp_path)
    ran: list[int] = []

    def slow(x: int) -> int:
        ran.append(x)
        return x * x

    m = s.memo(slow, namespace="week", name="slow", signature=b"slow")  # `ran` is no identity
    r = s.memo(lambda: 1.5, namespace="week", name="noisy",
               repeat=RepetitionPolicy(min_repetitions=3))
    for x in range(20):
        m(x)
    r(), r()
    archive = tmp_path / "week.xca"
    proc = s.run("export", str(archive), "cache.namespace=week")
    assert proc.returncode == 0, proc.stderr
    assert "exported 21 entries and 2 manifests" in proc.stdout
    server.restart()  # a week of results gone from memory
    s.backend.close()
    assert not any(cached(m, range(20)))
    proc = s.run("import", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported 23 entries")
    m.stats.reset()
    assert [m(x) for x in range(20)] == [x * x for x in range(20)]
    assert m.stats.hits == 20 and len(ran) == 20  # nothing recomputed
    assert r.moments().n == 2  # type: ignore[union-attr]  # running moments are back
    again = s.json("import", str(archive))
    assert (again["imported"], again["kept"]) == (0, 23)  # importing twice adds nothing


def test_import_keeps_present_entries_unless_replace(tmp_path: Path) -> None:
    src, dst = disk_store(tmp_path / "a", tmp_path), disk_store(tmp_path / "b", tmp_path)
    src.memo(double)(1)
    archive = tmp_path / "a.xca"
    assert src.run("export", str(archive)).returncode == 0
    dst.memo(double).precache(-1, 1)  # a different value already stored for the same call
    kept = dst.json("import", str(archive))
    assert (kept["imported"], kept["kept"]) == (1, 1)  # the manifest is new
    assert dst.memo(double)(1) == -1
    replaced = dst.json("import", str(archive), "--replace")
    assert replaced["imported"] == 2
    assert dst.memo(double)(1) == 2


def test_one_disk_cache_into_another(tmp_path: Path) -> None:
    here = disk_store(tmp_path / "here", tmp_path)
    there = disk_store(tmp_path / "there", tmp_path)
    m = here.memo(double)
    for x in range(10):
        m(x)
    archive = tmp_path / "here.xca"
    assert here.run("export", str(archive)).returncode == 0
    proc = there.run("import", str(archive))
    assert proc.returncode == 0, proc.stderr
    moved = there.memo(double)
    assert [moved(x) for x in range(10)] == [2 * x for x in range(10)]
    assert moved.stats.hits == 10


def test_cluster_export_clear_import(memcached_cluster: list[MemcachedServer],
                                     tmp_path: Path) -> None:
    s = memcached_store(memcached_cluster, tmp_path)
    m = fill(s)
    archive = tmp_path / "team.xca"
    assert s.run("export", str(archive), "cache.namespace=team").returncode == 0
    assert s.run("clear", "cache.namespace=team").returncode == 0
    assert s.json("ls", "cache.namespace=team")["functions"] == []
    assert s.run("import", str(archive)).returncode == 0
    assert all(cached(m["team.double"], range(6)) + cached(m["team.triple"], range(4)))
    assert m["team.noisy"].moments().n == 2  # type: ignore[union-attr]


def test_progress_bar_only_on_a_terminal(memcached: MemcachedServer, tmp_path: Path) -> None:
    s = memcached_store([memcached], tmp_path)
    fill(s)
    archive = tmp_path / "all.xca"
    piped = s.run("export", str(archive))
    assert piped.returncode == 0 and "%|" not in piped.stderr and "entries/s" not in piped.stderr
    code, out = on_terminal(["cache", "export", str(archive), *s.args], tmp_path)
    assert code == 0 and "export: 100%|" in out, out
    code, out = on_terminal(["cache", "import", str(archive), *s.args], tmp_path)
    assert code == 0 and "import: 100%|" in out, out
    piped = s.run("import", str(archive))
    assert piped.returncode == 0 and "%|" not in piped.stderr


# -- the run's configuration --------------------------------------------------------------------
def test_the_signing_key_is_the_runs(tmp_path: Path) -> None:
    s = disk_store(tmp_path / "signed", tmp_path)
    m = s.memo(double, signing_key=KEY_A)
    m(1)
    row = s.json("ls")["functions"][0]  # no key: the entry cannot be verified
    assert (row["function"], row["unverified"]) == ("?", 1)
    text = s.run("ls").stdout
    assert f"tag:{row['tag']}" in text and "do not verify" in text
    by_env = s.run("ls", "--json", env={"EXPCACHE_SIGNING_KEY": KEY_A})
    assert json.loads(by_env.stdout)["functions"][0]["function"] == label(double)
    by_cfg = s.json("ls", f"cache.signing_key={KEY_A}")
    assert by_cfg["functions"][0]["unverified"] == 0
    proc = s.run("clear", "--function", f"tag:{row['tag']}")  # as `ls` printed it
    assert proc.returncode == 0, proc.stderr
    assert not m.check_call_in_cache(1)


def test_an_experiment_bundle_selects_its_cache(memcached: MemcachedServer,
                                                tmp_path: Path) -> None:
    s = memcached_store([memcached], tmp_path)
    fill(s)
    s.memo(double, namespace="demo")(1)
    listed = s.json("ls", "experiment=demo_memcached")  # its YAML sets cache.namespace: demo
    assert listed["namespace"] == "demo"
    assert [(r["namespace"], r["entries"]) for r in listed["functions"]] == [("demo", 1)]


def test_a_bad_value_is_the_runs_error(tmp_path: Path) -> None:
    bad = ("cache=memcached", "cache.timeout=-1")
    verb = run_script("cache", "ls", *bad, cwd=tmp_path)
    job = run_script(f"hydra.run.dir={tmp_path / 'run'}", "task=demo", *bad, cwd=tmp_path)
    assert verb.returncode == 2 and job.returncode != 0
    message = clean(verb).strip().removeprefix("expcache cache ls: ")
    assert message.startswith("cache.timeout=-1.0:")
    assert f"expcache: {message}" in job.stderr  # word for word what the run says


def test_help_lists_the_verbs(tmp_path: Path) -> None:
    top = run_script("--help", cwd=tmp_path)
    assert "expcache cache ls|stats|clear|export|import" in top.stdout
    verbs = run_script("cache", "--help", cwd=tmp_path)
    assert verbs.returncode == 0
    assert all(f"\n  {verb} " in verbs.stdout for verb in ("ls", "stats", "clear", "export",
                                                             "import"))
    clear = run_script("cache", "clear", "--help", cwd=tmp_path)
    assert clear.returncode == 0 and all(f in clear.stdout for f in ("--function", "--all",
                                                                     "--yes", "--json"))
    bare = run_script("cache", cwd=tmp_path)
    assert bare.returncode == 2 and "usage: expcache cache VERB" in bare.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["cache", "lss"], "unknown verb 'lss' (one of: ls, stats, clear, export, import); "
                           "did you mean 'ls'?"),
        (["cache", "ls", "--bogus"], "unrecognized arguments: --bogus"),
        (["cache", "clear", "--function", "f", "--all"], "not allowed with argument"),
        (["cache", "export"], "FILE is required"),
        (["cache", "ls", "cache.timout=3"], "Key 'timout' not in 'DiskBackendConf'"),
        (["cache", "ls", "cache=nope"], "Could not find 'cache/nope'"),
        (["cache", "ls", "+sed=1"], "did you mean 'seed'?"),
        (["cache", "ls", "cache=memory"], "each process's own memory"),
        (["cache", "ls", "cache.signing_key=short"], "cache.signing_key=<redacted>: at least 16"),
        (["cache", "import", "x.xca", "notanoverride"], "'notanoverride' is not an override"),
    ],
)
def test_misuse_is_one_clear_line_and_exit_2(tmp_path: Path, argv: list[str], says: str) -> None:
    proc = run_script(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert says in clean(proc)
    assert proc.stdout == ""


def test_a_disk_directory_without_a_cache_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for verb in ("ls", "stats"):
        proc = run_script("cache", verb, f"cache.directory={missing}", cwd=tmp_path)
        assert proc.returncode == 1 and f"no disk cache in {missing}" in clean(proc)
    proc = run_script("cache", "export", str(tmp_path / "x.xca"), f"cache.directory={missing}",
                      cwd=tmp_path)
    assert proc.returncode == 1 and not missing.exists() and not (tmp_path / "x.xca").exists()


# -- unreachable servers ------------------------------------------------------------------------
@pytest.mark.parametrize("verb", ["ls", "stats", "clear", "export", "import"])
def test_an_unreachable_server_is_named(memcached_factory: Any, tmp_path: Path, verb: str) -> None:
    server = memcached_factory()
    s = memcached_store([server], tmp_path)
    archive = tmp_path / "a.xca"
    s.memo(double)(1)
    assert s.run("export", str(archive)).returncode == 0
    server.kill()
    extra = {"clear": ["cache.namespace=x"], "export": [str(tmp_path / "b.xca")],
             "import": [str(archive)]}.get(verb, [])
    proc = s.run(verb, *extra)
    assert proc.returncode == 1
    assert server.address in clean(proc) and "Connection refused" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "b.xca").exists()


def test_a_dead_cluster_node_stops_the_verb_before_any_work(
    memcached_factory: Any, tmp_path: Path
) -> None:
    nodes = [memcached_factory() for _ in range(3)]
    s = memcached_store(nodes, tmp_path)
    fill(s)
    nodes[1].kill()
    proc = s.run("clear", "cache.namespace=team")
    assert proc.returncode == 1
    assert f"unreachable: memcached {nodes[1].address}" in clean(proc)
    assert nodes[0].address not in proc.stderr and nodes[2].address not in proc.stderr
    assert "drop it from cache.servers" in proc.stderr
    alive = memcached_store([nodes[0], nodes[2]], tmp_path)
    survivors = alive.json("ls", "cache.namespace=team")["functions"]
    assert survivors  # nothing was cleared on the live nodes
    stats = s.run("stats")  # the per-node report still shows the live nodes
    assert stats.returncode == 1 and nodes[0].address in stats.stdout
    assert f"unreachable: memcached {nodes[1].address}" in stats.stdout


# -- damaged archives ---------------------------------------------------------------------------
def exported(tmp_path: Path, signing_key: str | None = None) -> tuple[Path, Store]:
    src = disk_store(tmp_path / "src", tmp_path)
    m = src.memo(double, signing_key=signing_key)
    for x in range(30):
        m(x)
    archive = tmp_path / "src.xca"
    env = {"EXPCACHE_SIGNING_KEY": signing_key} if signing_key else None
    proc = src.run("export", str(archive), env=env)
    assert proc.returncode == 0, proc.stderr
    return archive, disk_store(tmp_path / "dst", tmp_path)


def all_verify(s: Store, signing_key: str | None = None) -> int:
    keys = list(s.backend.iter_keys())
    serde = Serde(signing_key)
    for key in keys:
        data = s.backend.get(key)
        assert data is not None
        serde.verify(key, data)  # raises for a partial or wrong entry
    return len(keys)


def test_a_truncated_archive_imports_only_what_verifies(tmp_path: Path) -> None:
    archive, dst = exported(tmp_path)
    cut = tmp_path / "cut.xca"
    data = archive.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = dst.run("import", str(cut))
    assert proc.returncode == 1
    assert "truncated" in clean(proc) and str(cut) in proc.stderr
    written = int(proc.stderr.rsplit("imported ", 1)[1].split()[0])
    assert 0 < written < 31
    assert all_verify(dst) == written  # every entry written is whole and verifies


def test_an_archive_of_another_format_writes_nothing(tmp_path: Path) -> None:
    archive, dst = exported(tmp_path)
    data = bytearray(archive.read_bytes())
    data[9] = 99  # the format field of the header
    archive.write_bytes(bytes(data))
    proc = dst.run("import", str(archive))
    assert proc.returncode == 1
    assert "archive format 99; this expcache reads format 1" in clean(proc)
    assert not (tmp_path / "dst").exists()  # refused before the store was even opened


def test_an_archive_signed_with_another_key_writes_nothing(tmp_path: Path) -> None:
    archive, dst = exported(tmp_path, signing_key=KEY_A)
    proc = dst.run("import", str(archive), env={"EXPCACHE_SIGNING_KEY": KEY_B})
    assert proc.returncode == 1
    assert "signed with another key" in clean(proc)
    unsigned = dst.run("import", str(archive))
    assert unsigned.returncode == 1 and "archive's entries are signed" in clean(unsigned)
    assert all_verify(dst) == 0
    ok = dst.run("import", str(archive), f"cache.signing_key={KEY_A}")
    assert ok.returncode == 0, ok.stderr
    assert all_verify(dst, KEY_A) == 31


def test_export_leaves_out_entries_that_do_not_verify(tmp_path: Path) -> None:
    s = disk_store(tmp_path / "shared", tmp_path)
    s.memo(double)(1)
    s.memo(triple, signing_key=KEY_A)(1)  # a colleague's entry, signed with their key
    archive = tmp_path / "mine.xca"
    proc = s.run("export", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert "left out 2 entries that do not verify" in proc.stderr  # their entry and manifest
    dst = disk_store(tmp_path / "dst", tmp_path)
    assert dst.run("import", str(archive)).returncode == 0
    assert dst.memo(double).check_call_in_cache(1)


def test_importing_into_another_namespace_is_refused(tmp_path: Path) -> None:
    src = disk_store(tmp_path / "src", tmp_path)
    src.memo(double, namespace="week")(1)
    archive = tmp_path / "week.xca"
    assert src.run("export", str(archive), "cache.namespace=week").returncode == 0
    dst = disk_store(tmp_path / "dst", tmp_path)
    proc = dst.run("import", str(archive), "cache.namespace=other")
    assert proc.returncode == 2 and "holds namespace 'week'" in clean(proc)
    everything = tmp_path / "all.xca"
    assert src.run("export", str(everything)).returncode == 0  # no namespace: all of them
    proc = dst.run("import", str(everything), "cache.namespace=week")
    assert proc.returncode == 2 and "holds every namespace, not 'week'" in clean(proc)
    assert not (tmp_path / "dst").exists()


def test_entries_the_store_refuses_are_counted_and_fail_the_import(
    memcached: MemcachedServer, tmp_path: Path
) -> None:
    src = disk_store(tmp_path / "src", tmp_path)
    src.memo(lambda: list(range(2000)), name="big")()  # ~5 kB pickled
    src.memo(double)(1)
    archive = tmp_path / "mixed.xca"
    assert src.run("export", str(archive)).returncode == 0
    dst = memcached_store([memcached], tmp_path)
    proc = dst.run("import", str(archive), "cache.max_value_size=1024")
    assert proc.returncode == 1
    assert "refused 1 entry (full, or larger than its max_value_size)" in clean(proc)
    again = dst.run("import", str(archive), "cache.max_value_size=1024", "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["refused"] == 1
    assert dst.memo(double).check_call_in_cache(1)  # the others were imported


def test_a_missing_archive_is_named(tmp_path: Path) -> None:
    proc = run_script("cache", "import", str(tmp_path / "nope.xca"), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"{tmp_path / 'nope.xca'}: No such file or directory" in clean(proc)
