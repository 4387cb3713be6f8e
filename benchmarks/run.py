"""expcache overhead benchmark: one process, one private memcached, interleaved rows.

Run from the repository root (no arguments needed; about 100 s)::

    .venv/bin/python benchmarks/run.py

It prints one Markdown table per CPU placement and a summary of the targets, and writes
``benchmarks/results/<date>-<host>.json`` and ``benchmarks/results/latest.json``.

``--pin`` chooses where the client (this process) and memcached run, because on a small VM the
placement, not the code, dominates a loopback round trip:

- ``same``:  both on vCPU 0. A round trip is two context switches on one core (~20 us).
- ``split``: client on vCPU 0, server on vCPU 1. Each request wakes the other, idle, vCPU (~3x).
- ``none``:  no pinning; the scheduler decides per request (what users get by default).
- ``all`` (default): the three above in turn, each with its own server and its own rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _measure import Summary, run_interleaved, summarize
from _server import MemcachedProcess, exit_on_sigterm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("none", "same", "split")
TARGETS: list[tuple[str, str, float | None, str]] = [  # (row, reference, ceiling, label)
    ("xc_hit_small", "raw_get", 1.1, "hit, small args <= 1.1x raw get"),
    ("xc_hit_array", "raw_get", 1.3, "hit, 1e5-float array arg <= 1.3x raw get"),
    ("xc_map_100", "raw_get_many_100", 1.3, "map of 100 hits <= 1.3x raw get_many(100)"),
    ("xc_hit_disk", "diskcache_memoize", 1.2, "disk hit <= 1.2x diskcache memoize hit"),
    ("xc_miss_disk", "diskcache_set", 1.2, "disk miss + store <= 1.2x one diskcache set"),
    ("xc_miss_disk", "diskcache_memoize_miss", None, "disk miss vs diskcache memoize miss"),
    ("xc_hit_seed", "raw_get", None, "pyDVL 0.7 decorator hit vs raw get"),
]


def _placement(mode: str, all_cpus: set[int]) -> tuple[set[int], set[int] | None]:
    """(client CPUs, server CPUs or None for "inherit") for a pinning mode."""
    cpus = sorted(all_cpus)
    if mode == "same":
        return {cpus[0]}, {cpus[0]}
    if mode == "split":
        return {cpus[0]}, {cpus[1]}
    return all_cpus, None


def _keys_impl() -> dict[str, str]:
    import expcache.keys as keys

    doc = (keys.__doc__ or "").strip()
    return {
        "implementation": "placeholder" if "PLACEHOLDER" in doc else "final",
        "docstring_first_line": doc.splitlines()[0] if doc else "",
    }


def _git() -> dict[str, Any]:
    def out(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = out("status", "--porcelain", "--", "src")
    # The tree may hold uncommitted work: a digest of the measured sources ties the figures
    # to the exact code, committed or not.
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted((ROOT / "src" / "expcache").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {"commit": out("rev-parse", "HEAD"), "src_dirty": bool(status),
            "src_digest": digest.hexdigest()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("expcache", "pymemcache", "diskcache", "xxhash", "numpy", "pyDVL", "joblib"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    memcached = subprocess.run(
        ["memcached", "-V"], capture_output=True, text=True, check=False
    ).stdout.strip()
    found["memcached"] = memcached.removeprefix("memcached ")
    found["python"] = platform.python_version()
    return found


def _ratio(rows: dict[str, Summary], name: str, ref: str) -> dict[str, Any] | None:
    if name not in rows or ref not in rows:
        return None
    a, b = rows[name], rows[ref]
    slices = [x / y for x, y in zip(a.slice_medians_us, b.slice_medians_us, strict=True) if y > 0]
    return {
        "median": a.median_us / b.median_us,
        "slices_min": min(slices) if slices else None,
        "slices_max": max(slices) if slices else None,
    }


def measure_mode(
    mode: str, args: argparse.Namespace, tmp: Path, all_cpus: set[int]
) -> dict[str, Any]:
    from cases import build_cases

    client_cpus, server_cpus = _placement(mode, all_cpus)
    os.sched_setaffinity(0, client_cpus)
    with MemcachedProcess(cpus=server_cpus, threads=args.mc_threads) as server:
        cases, notes = build_cases(server.address, tmp / mode, with_pydvl=not args.no_pydvl)
        if args.only:
            keep = set(args.only.split(",")) | {"raw_get"}
            keep |= {c.reference for c in cases if c.name in keep and c.reference}
            cases = [c for c in cases if c.name in keep]

        def progress(msg: str) -> None:
            print(f"  [{mode}] {msg}", file=sys.stderr, flush=True)

        started = time.monotonic()
        rounds = run_interleaved(cases, seconds=args.seconds, seed=args.seed, progress=progress)
        wall = time.monotonic() - started
        server_pid = server.pid
    os.sched_setaffinity(0, all_cpus)
    summaries = {c.name: summarize(c) for c in cases}
    rows = []
    for case in cases:
        s = summaries[case.name]
        rows.append({
            "name": case.name,
            "what": case.what,
            "n": s.n,
            "block": case.block,
            "median_us": s.median_us,
            "p90_us": s.p90_us,
            "min_us": s.min_us,
            "slice_medians_us": s.slice_medians_us,
            "x_raw_get": _ratio(summaries, case.name, "raw_get"),
            "reference": case.reference,
            "x_reference": _ratio(summaries, case.name, case.reference) if case.reference else None,
            "target": case.target,
        })
    return {
        "pin": mode,
        "client_cpus": sorted(client_cpus),
        "server_cpus": sorted(server_cpus) if server_cpus is not None else None,
        "server_pid": server_pid,
        "measure_seconds": wall,
        "rounds": rounds,
        "notes": notes,
        "rows": rows,
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = result["meta"]
    lines.append(
        f"expcache benchmark -- {meta['date']} on {meta['host']} ({meta['cpus']} vCPU), "
        f"keys.py: {meta['keys']['implementation']}, "
        f"{meta['seconds_per_mode']:.0f} s of interleaved rounds per placement"
    )
    for mode in result["modes"]:
        lines += ["", f"### pin = {mode['pin']} (client CPUs {mode['client_cpus']}, "
                      f"server CPUs {mode['server_cpus'] or 'any'}; {mode['rounds']} rounds)", ""]
        lines.append("| row | median µs | p90 µs | calls | x raw get | vs | x vs (range over 5 slices) |")
        lines.append("|---|---:|---:|---:|---:|---|---|")
        for row in mode["rows"]:
            xr = row["x_raw_get"]
            xv = row["x_reference"]
            vs = "-"
            if xv is not None:
                vs = (f"**{xv['median']:.2f}** ({_fmt(xv['slices_min'])}-"
                      f"{_fmt(xv['slices_max'])})")
                if row["target"] is not None:
                    ok = "met" if xv["median"] <= row["target"] else "MISSED"
                    vs += f" target <= {row['target']} {ok}"
            lines.append(
                f"| {row['name']} | {row['median_us']:.1f} | {row['p90_us']:.1f} | {row['n']} "
                f"| {_fmt(xr['median'] if xr else None)} | {row['reference'] or '-'} | {vs} |"
            )
        lines += [f"- {n}" for n in mode["notes"]]
    lines += ["", "### targets (median ratio, same run)", ""]
    header = "| target | " + " | ".join(f"pin={m['pin']}" for m in result["modes"]) + " |"
    lines += [header, "|---|" + "---|" * len(result["modes"])]
    for name, ref, ceiling, label in TARGETS:
        cells = []
        for mode in result["modes"]:
            found = {r["name"]: r for r in mode["rows"]}
            if name not in found or ref not in found:
                cells.append("-")
                continue
            ratio = found[name]["median_us"] / found[ref]["median_us"]
            verdict = "" if ceiling is None else (" met" if ratio <= ceiling else " MISSED")
            cells.append(f"{ratio:.2f}{verdict}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Rows:", ""]
    for row in result["modes"][0]["rows"]:
        lines.append(f"- `{row['name']}`: {row['what']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", choices=[*MODES, "all"], default="all",
                        help="CPU placement of client and server (default: all three in turn)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="measuring time per placement (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round row order")
    parser.add_argument("--mc-threads", type=int, default=1,
                        help="memcached worker threads (default 1: every row on one thread)")
    parser.add_argument("--no-pydvl", action="store_true", help="skip the pyDVL peer rows")
    parser.add_argument("--only", default="",
                        help="comma-separated rows to keep (with raw_get and their references)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default benchmarks/results/<date>-<host>.json)")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    all_cpus = set(os.sched_getaffinity(0))
    modes = list(MODES) if args.pin == "all" else [args.pin]
    if len(all_cpus) < 2 and "split" in modes:
        print("only one CPU available: skipping --pin split", file=sys.stderr)
        modes.remove("split")
    now = dt.datetime.now().astimezone()
    host = socket.gethostname()
    result: dict[str, Any] = {
        "meta": {
            "date": now.isoformat(timespec="seconds"),
            "host": host,
            "cpus": len(all_cpus),
            "cpu_model": _cpu_model(),
            "kernel": platform.release(),
            "versions": _versions(),
            "git": _git(),
            "keys": _keys_impl(),
            "seconds_per_mode": args.seconds,
            "mc_threads": args.mc_threads,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        "modes": [],
    }
    with tempfile.TemporaryDirectory(prefix="expcache-bench-") as tmp:
        for mode in modes:
            result["modes"].append(measure_mode(mode, args, Path(tmp), all_cpus))
    print(render(result))
    out = args.out or RESULTS / f"{now:%Y-%m-%d}-{host}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1) + "\n"
    out.write_text(text)
    if args.out is None:
        (RESULTS / "latest.json").write_text(text)
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
