"""The schemas are derived from the constructors: one source of truth per option.

What is pinned here: every keyword parameter of a constructor is an option (or deliberately
Python-only), defaults and types are the signature's, the YAML files state only what differs
from those defaults, the README's option lists are the generated ones, and a composed config
pickles (the joblib launcher ships it to its workers).
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from expcache import ConfigError, Memoized, RepetitionPolicy
from expcache.app.docs import render
from expcache.app.nodes import keyword_parameters
from expcache.app.schemas import (
    CACHE_MEMO_OPTIONS,
    SET_BY_APP,
    _servers,
    all_schemas,
    derive,
    yaml_type,
)
from expcache.backends import DiskBackend, MemcachedBackend, MemoryBackend, NullBackend

from .conftest import Compose
from .helpers import CONF, REPO

SCHEMAS = {s.name: s for s in all_schemas()}
BACKENDS = {"disk": DiskBackend, "memcached": MemcachedBackend}
BACKENDS.update({"memory": MemoryBackend, "none": NullBackend})
# Parameters YAML cannot express, kept for the Python API only (all others are options).
PYTHON_ONLY = {
    "expcache_cache_memcached_schema": ("tls_context",),
    "expcache_policy_deterministic_schema": ("codec",),  # a payload codec object
    "expcache_policy_stochastic_schema": ("codec",),
}


def _yaml_files() -> list[Path]:
    return sorted(p for p in CONF.rglob("*.yaml") if p.parent.name not in ("help", "callbacks"))


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_parameter_is_an_option_or_deliberately_python_only(name: str) -> None:
    schema = SCHEMAS[name]
    assert schema.python_only == PYTHON_ONLY.get(name, ())
    target = schema.target
    if schema.group == "cache":
        backend = BACKENDS[schema.key]
        params = set(keyword_parameters(backend)[0]) | set(CACHE_MEMO_OPTIONS) | {"strict"}
    elif schema.group == "policy":
        memo = set(keyword_parameters(Memoized)[0]) - set(SET_BY_APP) - set(CACHE_MEMO_OPTIONS)
        repeat = set(keyword_parameters(RepetitionPolicy)[0])
        if schema.key == "stochastic":  # leases and the store threshold are not used there
            params = (memo - {"time_threshold", "lease", "lease_ttl", "lease_max_wait"}) | repeat
        else:  # conflicts of running-moment updates happen only when repeating
            params = memo - {"max_cas_retries"}
    else:
        assert target is not None
        module, _, attr = target.rpartition(".")
        params = set(keyword_parameters(getattr(__import__(module, fromlist=[attr]), attr))[0])
    assert {o.name for o in schema.options} | set(schema.python_only) == params


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_defaults_and_types_are_the_signatures(name: str) -> None:
    for option in SCHEMAS[name].options:
        owner = _owner(option.owner)
        p = keyword_parameters(owner)[0][option.name]
        if option.name == "servers":  # the one adapted default: through the core's parser
            assert option.default == [f"{h}:{port}" for h, port in MemcachedBackend().servers]
            continue
        expected = MISSING if p.default is inspect.Parameter.empty else p.default
        if isinstance(expected, tuple):
            expected = list(expected)
        if hasattr(expected, "items"):
            expected = dict(expected)
        assert option.default == expected, option
        assert option.type == yaml_type(p.annotation)


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        (("127.0.0.1:11211",), ["127.0.0.1:11211"]),  # a tuple of one spec (the default)
        (("a:1", "b:2"), ["a:1", "b:2"]),  # a tuple of two specs, not a (host, port) pair
        (("127.0.0.1", 11211), ["127.0.0.1:11211"]),  # one (host, port) pair
        ("[::1]:11211", ["[::1]:11211"]),
        ([("h", 1), "[::1]:2"], ["h:1", "[::1]:2"]),
    ],
)
def test_the_servers_default_is_read_as_the_constructor_reads_it(
    default: Any, expected: list[str]
) -> None:
    assert _servers(default) == expected
    assert _servers(default) == [
        f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in MemcachedBackend(default).servers
    ]


def _owner(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    obj: Any = __import__(module, fromlist=[attr])
    return getattr(obj, attr)


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(CONF)))
def test_yaml_files_state_only_what_differs_from_the_defaults(path: Path) -> None:
    text = yaml.safe_load(path.read_text()) or {}
    defaults = text.pop("defaults", [])
    schema_names = [d.split("@")[0].lstrip("/") for d in defaults if isinstance(d, str)]
    schema = next((SCHEMAS[n] for n in schema_names if n in SCHEMAS), None)
    if schema is None:
        return  # an open node (model, method), the primary config or a bundle
    by_name = {o.name: o for o in schema.options}
    for key, value in text.items():
        assert key in by_name, f"{path.name}: {key} is not an option of {schema.name}"
        assert value != by_name[key].default, (
            f"{path.relative_to(CONF)}: {key}: {value!r} is the default of "
            f"{by_name[key].owner}; remove it from the YAML"
        )


def test_open_groups_state_only_what_differs_from_their_targets() -> None:
    """Model and method YAMLs name a third-party class: what they set must differ from its
    signature's defaults too (imports scikit-learn and pyDVL)."""
    pytest.importorskip("pydvl")
    for group in ("model", "method"):
        for path in sorted((CONF / group).glob("*.yaml")):
            node = yaml.safe_load(path.read_text())
            node.pop("defaults")
            target = _owner(node.pop("_target_"))
            params = keyword_parameters(target)[0]
            for key, value in node.items():
                if isinstance(value, dict):
                    continue
                assert key in params, f"{path.name}: {key}"
                assert value != params[key].default, f"{path.name}: {key} is the default"


def test_readme_option_lists_are_generated_from_the_schemas() -> None:
    text = (REPO / "README.md").read_text()
    assert text.count("<!-- options: ") == len(SCHEMAS)
    assert render(text) == text, (
        "README.md's option lists differ from the constructors' signatures: run "
        "`.venv/bin/python -m expcache.app.docs README.md`"
    )


_UNITS = {"": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_AMOUNT = r"(\d+(?:\.\d+)?)(?: ([KMG]iB))?"
_RANGE = re.compile(rf"`(?:{_AMOUNT} <= )?([a-z_]+) (>=|>|<=) {_AMOUNT}`")


def _readme_ranges() -> list[tuple[str, str, str, float]]:
    """``(backend, option, operator, bound)`` of every range README.md's cache section states."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("Ranges, checked by the constructors") :].split("\n\n")[1]
    bullets = re.split(r"\n(?=- )", block)
    out = []
    for bullet in bullets:
        head = re.match(r"- (?:`cache=(\w+)`|every backend): ", bullet)
        assert head, f"not a range bullet: {bullet!r}"
        for key in [head[1]] if head[1] else sorted(BACKENDS):
            for lo, lo_unit, name, op, bound, unit in _RANGE.findall(" ".join(bullet.split())):
                if lo:
                    out.append((key, name, ">=", float(lo) * _UNITS[lo_unit]))
                out.append((key, name, op, float(bound) * _UNITS[unit]))
    return out


def test_the_readme_states_the_constructors_ranges() -> None:
    """The README's range list is prose, so it is checked rather than generated: for each
    stated bound, the constructor accepts the bound's side and rejects the other, naming the
    option."""
    ranges = _readme_ranges()
    for key in BACKENDS:  # the list covers every backend, and more than the breaker
        stated = {name for k, name, _, _ in ranges if k == key}
        assert {"breaker_threshold", "breaker_cooldown"} <= stated, key
    assert len({(k, n) for k, n, _, _ in ranges}) == 17  # parsing missed none
    for key, name, op, bound in ranges:
        option = next(o for o in SCHEMAS[f"expcache_cache_{key}_schema"].options if o.name == name)
        whole = int in (option.type, *typing.get_args(option.type))
        step = 1 if whole else 1e-3
        inside = {">=": bound, ">": bound + step, "<=": bound}[op]
        outside = {">=": bound - step, ">": bound, "<=": bound + step}[op]
        convert = int if whole else float
        BACKENDS[key](**{name: convert(inside)})
        with pytest.raises(ConfigError) as info:
            BACKENDS[key](**{name: convert(outside)})
        assert info.value.param == name, (key, name, op, bound)


def test_a_signature_change_flows_into_the_schema() -> None:
    """The derivation rules, on a toy constructor: ``**kwargs`` followed into the base class,
    tuples become lists, ``bytes`` and object-typed members dropped, Python-only listed."""

    class Base:
        def __init__(self, *, retries: int = 3) -> None: ...

    class Toy(Base):
        def __init__(
            self,
            name: str,
            *,
            ratio: float = 0.5,
            key: bytes | str | None = None,
            where: tuple[str, ...] = ("a", "b"),
            context: object | None = None,
            mode: typing.Literal["x", "y"] = "x",
            **rest: Any,
        ) -> None: ...

    options, python_only = derive(Toy)
    got = {o.name: (o.type, o.default) for o in options}
    assert got == {
        "name": (str, MISSING),
        "ratio": (float, 0.5),
        "key": (typing.Optional[str], None),  # noqa: UP045
        "where": (typing.List[str], ["a", "b"]),  # noqa: UP006
        "mode": (str, "x"),
        "retries": (int, 3),
    }
    assert python_only == ["context"]


def test_configs_pickle_into_a_fresh_process(cfg_of: Compose, tmp_path: Path) -> None:
    """The joblib launcher pickles each job's config: the schema classes must be importable."""
    cfg = cfg_of("cache=memcached", "policy=stochastic")
    blob = tmp_path / "cfg.pickle"
    blob.write_bytes(pickle.dumps(cfg))
    code = (
        "import pickle, sys; cfg = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(type(cfg).__name__, cfg.cache.servers[0], cfg.policy.min_repetitions)"
    )
    env = {**os.environ, "EXPCACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(blob)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["DictConfig", cfg.cache.servers[0], "3"]
    assert OmegaConf.get_type(pickle.loads(blob.read_bytes()).cache) is OmegaConf.get_type(
        cfg.cache
    )


def test_registering_the_schemas_imports_no_heavy_library() -> None:
    """``--help``, tab completion and ``task=demo`` stay fast (hydra#934): only the plan of a
    valuation imports scikit-learn and pyDVL."""
    code = (
        "import sys, expcache.app; heavy = sorted(m for m in ('sklearn', 'pydvl', 'matplotlib')"
        " if m in sys.modules); print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
