"""What ``expcache cache ...`` prints for people: aligned tables, sizes and ages at a glance.

Kept apart from the verbs so that the tables can change without touching what the verbs do;
``--json`` prints the underlying reports unformatted instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ..archive import _DIGEST, _END, ExportReport, ImportReport
from ..inventory import FunctionSummary
from ..keys import KEY_FORMAT_VERSION

__all__ = ["archive_records", "count", "exported", "functions", "imported", "server_stats"]

_SIZES: Final = frozenset({"bytes", "limit_maxbytes", "item_size_max", "size_limit"})
_NOT_SUMMED: Final = frozenset({"version", "uptime", "item_size_max"})


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns padded to their widest cell; ``right``: the numeric columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _scope(scope: str | None) -> str:
    if scope is None:
        return "every namespace"
    return f"namespace {scope!r}" if scope else "the default namespace"


def _function(row: FunctionSummary) -> str:
    if row.key_format != KEY_FORMAT_VERSION:
        return f"(key format {row.key_format}: never read)"
    return row.function if row.function != "?" else f"tag:{row.tag}"


def functions(store: str, scope: str | None, rows: Sequence[FunctionSummary]) -> str:
    """``cache ls``: one row per namespace and function."""
    head = f"{store}, {_scope(scope)}"
    if not rows:
        return f"{head}: no entries"
    cells = [["NAMESPACE", "FUNCTION", "ENTRIES", "MOMENTS", "BYTES", "OLDEST", "NEWEST",
              "SAVES"]]
    for r in rows:
        cells.append([r.namespace or "(default)", _function(r), str(r.entries), str(r.moments),
                      size(r.bytes), when(r.oldest), when(r.newest), duration(r.compute_seconds)])
    total = sum(r.entries for r in rows)
    lines = [head, table(cells, frozenset({2, 3, 4, 7})),
             f"{count(len(rows), 'function')}, {count(total, 'entry', 'entries')}, "
             f"{size(sum(r.bytes for r in rows))}; "
             f"SAVES: compute seconds one hit of every entry saves"]
    unverified = sum(r.unverified for r in rows)
    if unverified:
        lines.append(
            f"{unverified} entries do not verify with this cache's signing key (written with "
            "another key, or damaged): their function shows as tag:<tag>; set "
            "cache.signing_key or $EXPCACHE_SIGNING_KEY as for the runs that wrote them"
        )
    return "\n".join(lines)


def _cell(name: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if name in _SIZES:
        return size(float(value))
    if name == "uptime":
        return duration(float(value))
    return str(value)


def server_stats(store: str, report: Mapping[str, Any]) -> str:
    """``cache stats``: the store's figures; per node (a column each) for memcached."""
    nodes: Mapping[str, Mapping[str, Any]] = report.get("nodes") or {}
    if not nodes:
        rows = [[k, _cell(k, v)] for k, v in report.items() if k != "backend"]
        return f"{store}\n{table(rows, frozenset({1}))}"
    alive = [n for n in nodes.values() if "error" not in n]
    names: list[str] = []
    for node in alive:
        names.extend(k for k in node if k not in names)
    cells = [["", *nodes, *(["total"] if len(nodes) > 1 else [])]]
    for name in names:
        row = [name, *(_cell(name, n.get(name)) if "error" not in n else "-"
                       for n in nodes.values())]
        if len(nodes) > 1:
            summed = name not in _NOT_SUMMED
            row.append(_cell(name, sum(int(n.get(name) or 0) for n in alive)) if summed else "")
        cells.append(row)
    hits = sum(int(n.get("get_hits") or 0) for n in alive)
    misses = sum(int(n.get("get_misses") or 0) for n in alive)
    if hits + misses:
        ratios = [f"{int(n['get_hits']) / max(1, int(n['get_hits']) + int(n['get_misses'])):.1%}"
                  if "error" not in n else "-" for n in nodes.values()]
        cells.append(["hit ratio", *ratios, *([f"{hits / (hits + misses):.1%}"]
                                             if len(nodes) > 1 else [])])
    lines = [f"{store}: {len(nodes)} node{'s' if len(nodes) > 1 else ''}",
             table(cells, frozenset(range(1, len(cells[0]))))]
    lines += [f"unreachable: {n['error']}" for n in nodes.values() if "error" in n]
    return "\n".join(lines)


def exported(store: str, r: ExportReport) -> str:
    scope = _scope(r.namespace)
    return (f"exported {count(r.entries, 'entry', 'entries')} and "
            f"{count(r.manifests, 'manifest')} ({size(r.bytes)}) of {scope} from {store} to "
            f"{r.path}")


def imported(store: str, r: ImportReport) -> str:
    h = r.header
    origin = f"{_scope(h.get('namespace'))}, exported {when(h.get('created'))}"
    if h.get("host"):
        origin += f" on {h['host']}"
    source = h.get("source") or {}
    if source.get("backend"):
        where = source.get("servers") or source.get("directory") or ""
        if isinstance(where, list):
            where = ",".join(where)
        origin += f" from {source['backend']} {where}".rstrip()
    kept = " (--replace overwrites them)" if r.kept else ""
    return (f"imported {count(r.imported, 'entry', 'entries')} into {store} from {r.path} "
            f"({origin}); "
            f"{r.kept} already present, kept{kept}; {r.refused} refused by the store")


def archive_records(path: str | os.PathLike[str]) -> int | None:
    """The record count in an archive's end marker, for a bar with an end (``None`` when the
    file has no plausible end marker: the import itself finds out what is wrong)."""
    tail = _END.size + _DIGEST
    try:
        with open(Path(path), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < tail:
                return None
            fh.seek(-tail, os.SEEK_END)
            marker, count = _END.unpack(fh.read(_END.size))
    except OSError:
        return None
    return int(count) if marker == b"E" else None
