"""``expcache cache VERB``: look into and operate the cache a run is configured with.

Why verbs of their own and not a Hydra task: a run's command line is Hydra's override grammar
(``expcache cache stats`` is a parse error there), and these verbs need flags (``--all``,
``--yes``) that belong to no run's config. The words after the verb are a run's overrides all
the same -- groups, ``key=value``, ``experiment=...`` -- composed with Hydra's Compose API over
the console script's own config directory and checked by the run's own plan code, so the cache
you ran with is the cache you inspect, and a bad key is the run's one-line error. The task is
composed but not built: building the valuation task imports pyDVL and loads data, and no verb
needs it.

Exit codes: 0 done; 1 the store or the archive failed (an unreachable server, a damaged
archive, entries the store refused, a declined confirmation); 2 misuse (an unknown verb or
flag, a bad config value, ``--all`` without a terminal or ``--yes``).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from diskcache.core import DBNAME
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from .. import _validate
from ..archive import export_archive, import_archive, read_header
from ..backends import Backend, DiskBackend
from ..errors import ConfigError, ExpcacheError
from ..inventory import entry_keys, list_functions, scoped_prefix
from ..keys import key_prefix
from ..serde import DEFAULT_MAX_SIZE, Serde, signing_key_from_env
from . import build, cli_format
from .main import config_dir

__all__ = ["VERBS", "main"]

VERBS: Final = ("ls", "stats", "clear", "export", "import")
_TAG: Final = "tag:"  # `ls` shows an entry whose label it cannot verify as tag:<12 hex>

_ABOUT: Final = {
    "ls": "per namespace and function: entries, bytes, oldest and newest, and the compute "
    "seconds they save. Every namespace, or only the one set with cache.namespace=NS.",
    "stats": "the store itself: items, bytes, and the server's own counters (per node of a "
    "memcached cluster).",
    "clear": "delete one namespace (cache.namespace=NS), one function of it (--function "
    "NAME, as `ls` prints it), or the whole store (--all, confirmed on a terminal or by --yes).",
    "export": "write a portable archive of the entries (values, running moments, identity "
    "manifests) of one namespace (cache.namespace=NS) or of every namespace to FILE.",
    "import": "store every verified entry of the archive FILE; entries already present are "
    "kept unless --replace.",
}
_USAGE: Final = """\
usage: expcache cache VERB [flags] [group=option ...] [key=value ...]

Operate the cache a run is configured with: the same groups and overrides as a run, e.g.
  expcache cache ls cache=memcached 'cache.servers=[10.0.0.5:11211]' cache.namespace=exp1

verbs:
""" + "".join(
    textwrap.fill(about, 90, initial_indent=f"  {verb:<8}", subsequent_indent=" " * 10) + "\n"
    for verb, about in _ABOUT.items()
) + """
`expcache cache VERB --help` shows a verb's flags.
"""


class Misuse(Exception):
    """Exit 2: the command line or the config is wrong."""


class Failed(Exception):
    """Exit 1: the store or the archive failed; nothing the command line can fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Misuse(f"{message} (see `{self.prog} --help`)")


def _parser(verb: str) -> _Parser:
    p = _Parser(
        prog=f"expcache cache {verb}",
        description=_ABOUT[verb],
        allow_abbrev=False,
        epilog="Overrides are a run's: groups (cache=memcached), values (cache.namespace=x), "
        "bundles (experiment=NAME). The signing key is cache.signing_key or "
        "$EXPCACHE_SIGNING_KEY, as for runs.",
    )
    if verb in ("export", "import"):
        p.add_argument("file", metavar="FILE", type=Path, nargs="?", help="the archive")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="as for a run")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    if verb == "clear":
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("--function", metavar="NAME", help="one function, as `ls` prints it")
        scope.add_argument("--all", action="store_true", help="every entry of the whole store")
        p.add_argument("--yes", action="store_true", help="confirm --all without asking")
    if verb == "import":
        p.add_argument("--replace", action="store_true", help="overwrite entries already present")
    return p


# -- the cache of a run's config --------------------------------------------------------------
@dataclass
class Target:
    backend: Backend
    serde: Serde
    namespace: str
    explicit: bool  # the config names the namespace (else '' is only the default)

    @property
    def store(self) -> str:
        return f"{self.backend.name} {self.backend.where}"

    @property
    def scope(self) -> str | None:
        """The namespace `ls`/`export` look at: ``None`` is every namespace."""
        return self.namespace if self.explicit else None


def _compose(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item and not item.startswith("~"):
            raise Misuse(f"{item!r} is not an override (key=value or group=option)")
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=overrides)
    except HydraException as exc:
        text = str(exc).split("\nConfig search path:")[0].strip()
        if exc.__cause__ is not None:
            text += f"\n{exc.__cause__}"
        raise Misuse(text) from None


def _named_namespace(overrides: list[str]) -> bool:
    parsed = OverridesParser.create().parse_overrides(overrides)
    return any(o.key_or_group == "cache.namespace" and not o.is_delete() for o in parsed)


def target(overrides: list[str]) -> Target:
    """The run's cache, checked as ``build.plan`` checks it -- every section but the task's
    own options, which only building the task would check."""
    cfg = _compose(overrides)
    try:
        root = build._resolved(cfg)
        cache = build._section(root, "cache")
        policy = build._section(root, "policy")
        build._section(root, "task")
        _validate.integer("seed", root.get("seed", 0), ge=0)
        backend, memo, _strict = build._cache(cache)
        schema = getattr(OmegaConf.get_type(cfg.policy), "__schema__", None)
        build._policy(policy, memo, [o.name for o in schema.options] if schema else None)
        build._check_top_level(cfg, root)
        key = memo.get("signing_key")
        # Not the memoizers' bound (the store's max_value_size): an archived entry too large
        # for this store is the store's to refuse, and counted, not an invalid entry that
        # stops the import. Decompression stays bounded.
        bound = max(DEFAULT_MAX_SIZE, backend.max_value_size or 0)
        serde = Serde(key if key is not None else signing_key_from_env(), max_size=bound)
    except ConfigError as exc:
        raise Misuse(str(exc)) from None
    if backend.scope == "process":
        raise Misuse(
            f"cache={backend.name} lives in each process's own memory: there is no store to "
            "operate on from here (choose cache=disk or cache=memcached)"
        )
    namespace = str(memo.get("namespace") or "")
    return Target(backend, serde, namespace, bool(namespace) or _named_namespace(overrides))


def reachable(t: Target, *, existing: bool) -> None:
    """Refuse before any work when a node is down (a listing, export or clear of a cluster
    with a dead node would silently miss its share). ``existing``: the verb only reads, so a
    disk directory that holds no cache is a typo, not a cache to create."""
    b = t.backend
    if isinstance(b, DiskBackend) and existing and not (b.directory / DBNAME).is_file():
        raise Failed(f"no disk cache in {b.directory} (cache.directory or $EXPCACHE_DIR)")
    failures = b.probe()
    if failures:
        why = "; ".join(r if w in r else f"{b.name} {w}: {r}" for w, r in failures)
        hint = ""
        if len(failures) < len(b.describe().get("servers") or ()):
            them = "it" if len(failures) == 1 else "them"
            hint = f" (drop {them} from cache.servers to work on the other nodes)"
        raise Failed(f"unreachable: {why}; nothing was done{hint}")


def _say(args: argparse.Namespace, text: str, data: Any) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


@contextmanager
def _progress(total: int | None, what: str) -> Iterator[Callable[[int], None] | None]:
    """A bar on stderr when it is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    try:  # a pseudo-terminal may report 0 x 0, on which tqdm hides its bar
        size = os.get_terminal_size(sys.stderr.fileno())
        width, height = size.columns or 80, size.lines or 24
    except OSError:
        width, height = 80, 24
    with tqdm(total=total, desc=what, unit=" entries", file=sys.stderr, ncols=width,
              nrows=height) as bar:
        yield bar.update


# -- verbs ------------------------------------------------------------------------------------
def ls(args: argparse.Namespace, t: Target) -> int:
    reachable(t, existing=True)
    rows = list_functions(t.backend, t.serde, t.scope)
    data = {"store": t.backend.describe(), "namespace": t.scope,
            "functions": [r.as_dict() for r in rows]}
    _say(args, cli_format.functions(t.store, t.scope, rows), data)
    return 0


def stats(args: argparse.Namespace, t: Target) -> int:
    b = t.backend
    if isinstance(b, DiskBackend):
        reachable(t, existing=True)
    report = b.server_stats()
    _say(args, cli_format.server_stats(t.store, report), report)
    failed = [n for n, v in report.get("nodes", {}).items() if "error" in v]
    return 1 if failed else 0


def _function_prefix(namespace: str, name: str) -> str:
    if name.startswith(_TAG):
        tag = name[len(_TAG):]
        if len(tag) != 12 or any(c not in "0123456789abcdef" for c in tag):
            raise Misuse(f"--function {name}: a tag is tag:<12 lowercase hex>, as `ls` shows it")
        return f"{key_prefix(namespace)}{tag}:"
    if not name:
        raise Misuse("--function: a function's name, as `ls` prints it")
    return key_prefix(namespace, name)


def clear(args: argparse.Namespace, t: Target) -> int:
    b = t.backend
    shown = repr(t.namespace) if t.namespace else "'' (the default)"
    if args.all:
        reachable(t, existing=False)
        items = b.server_stats().get("items")
        question = (f"Delete EVERY entry of {t.store} -- all namespaces, every user of this "
                    f"store ({items} items)?")
        if not args.yes and not _confirm(question):
            print("nothing was cleared", file=sys.stderr)
            return 1
        removed = b.clear()
        _say(args, f"cleared {t.store}: {removed} items", {"removed": removed, "scope": "all",
                                                             "store": b.describe()})
        return 0
    if args.function is not None:
        prefix = _function_prefix(t.namespace, args.function)
        what = f"function {args.function} in namespace {shown}"
    elif t.explicit:
        prefix, what = scoped_prefix(t.namespace), f"namespace {shown}"
    else:
        raise Misuse("say what to clear: a namespace (cache.namespace=NS), a function "
                     "(--function NAME, as `expcache cache ls` prints it), or the whole store "
                     "(--all)")
    reachable(t, existing=False)
    removed = b.clear(prefix)
    _say(args, f"removed {cli_format.count(removed, 'key')} of {what} from {t.store}",
         {"removed": removed, "scope": what, "prefix": prefix, "store": b.describe()})
    if not removed and not args.json:
        print(f"expcache cache clear: nothing matched {what} (`expcache cache ls` lists what "
              "there is)", file=sys.stderr)
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise Misuse("refusing to clear the whole store without confirmation: stdin is not a "
                     "terminal; pass --yes to confirm")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def export(args: argparse.Namespace, t: Target) -> int:
    reachable(t, existing=True)
    total = None
    if sys.stderr.isatty():  # one more enumeration, for a bar with an end
        total = sum(1 for _ in entry_keys(t.backend, scoped_prefix(t.scope), manifests=True))
    with _progress(total, "export") as bar:
        report = export_archive(t.backend, t.serde, args.file, t.scope, progress=bar)
    _say(args, cli_format.exported(t.store, report), asdict(report))
    if report.skipped and not args.json:
        left = cli_format.count(report.skipped, "entry", "entries")
        print(f"expcache cache export: left out {left} that do not verify "
              "with this cache's signing key (written with another key, or damaged)",
              file=sys.stderr)
    return 0


def import_(args: argparse.Namespace, t: Target) -> int:
    with open(args.file, "rb") as fh:
        header = read_header(fh)
    theirs = header.get("namespace")
    if t.explicit and theirs != t.namespace:
        held = "every namespace" if theirs is None else f"namespace {theirs!r}"
        raise Misuse(f"{args.file} holds {held}, not {t.namespace!r}: entries keep the "
                     "namespace they were written in (drop cache.namespace=...)")
    reachable(t, existing=False)
    with _progress(cli_format.archive_records(args.file), "import") as bar:
        report = import_archive(t.backend, t.serde, args.file, replace=args.replace,
                                progress=bar)
    _say(args, cli_format.imported(t.store, report), asdict(report))
    if report.refused:
        refused = cli_format.count(report.refused, "entry", "entries")
        print(f"expcache cache import: {t.store} refused {refused} (full, or "
              "larger than its max_value_size)", file=sys.stderr)
        return 1
    return 0


_RUN: Final[dict[str, Callable[[argparse.Namespace, Target], int]]] = {
    "ls": ls, "stats": stats, "clear": clear, "export": export, "import": import_,
}


def main(argv: Sequence[str]) -> int:
    """``expcache cache ...`` (``argv`` without the ``cache``): the exit code."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE, end="", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    prog = f"expcache cache {verb}"
    try:
        if verb not in VERBS:
            close = difflib.get_close_matches(verb, VERBS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise Misuse(f"unknown verb {verb!r} (one of: {', '.join(VERBS)}){hint}")
        args = _parser(verb).parse_intermixed_args(rest)
        if verb in ("export", "import") and args.file is None:
            raise Misuse(f"FILE is required: {prog} FILE [key=value ...]")
        t = target(args.overrides)
        try:
            return _RUN[verb](args, t)
        finally:
            t.backend.close()
    except Misuse as exc:
        print(f"{prog if verb in VERBS else 'expcache cache'}: {exc}", file=sys.stderr)
        return 2
    except (Failed, ExpcacheError) as exc:  # ArchiveError, BackendError, ...
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `expcache cache ls | head`: the reader has all it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # no second error at exit
        return 0
    except OSError as exc:
        name = f" {exc.filename}:" if exc.filename else ""
        print(f"{prog}:{name} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
