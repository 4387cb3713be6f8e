"""Key format 3 (``[ns:]ex3:<tag>:<digest>``), its prefixes and parser, and what explain()
will read: the identity manifest and the per-argument digests."""

from __future__ import annotations

import re
from typing import Any

import pytest
import xxhash

from expcache.errors import ConfigError
from expcache.keys import (
    ARGS_LIMIT,
    ARGS_TRUNCATED,
    KEY_FORMAT_VERSION,
    KeyMaker,
    KeyParts,
    identity_from_manifest,
    key_prefix,
    pack_argument_digests,
    parse_key,
    unpack_argument_digests,
)

KEY = re.compile(r"(?:([A-Za-z0-9_.\-]{1,64}):)?ex3:([0-9a-f]{12}):([0-9a-f]{32})")


def build(src: str, name: str = "f", module: str = "generated", **globals_: Any) -> Any:
    ns: dict[str, Any] = {"__name__": module, **globals_}
    exec(compile(src, "<generated>", "exec", dont_inherit=True), ns)
    return ns[name]


def scale(x: float, k: float = 2.0, *, shift: float = 0.0) -> float:
    return x * k + shift


# ------------------------------------------------------------------------------ the key string
def test_a_key_is_namespace_version_tag_digest() -> None:
    km = KeyMaker(scale, namespace="proj")
    key = km((1.0,), {})
    m = KEY.fullmatch(key)
    assert m is not None and m.group(1) == "proj"
    assert KEY_FORMAT_VERSION == 3
    assert km.label == f"{__name__}.scale"
    assert km.tag == m.group(2) == xxhash.xxh3_64_digest(km.label.encode())[:6].hex()
    assert key.startswith(km.prefix) and km.prefix == f"proj:ex3:{km.tag}:"
    assert km.prefix == key_prefix("proj", km.label)
    assert KEY.fullmatch(KeyMaker(scale)((1.0,), {}))  # no namespace: no leading colon


def test_the_tag_follows_the_label_so_a_function_can_be_cleared_by_prefix() -> None:
    named = KeyMaker(scale, label="utility")
    assert named.tag == KeyMaker(lambda x: x, label="utility").tag != KeyMaker(scale).tag
    assert named((1.0,), {}).startswith(key_prefix("", "utility"))
    assert key_prefix("") == "ex3:" and key_prefix("ns") == "ns:ex3:"
    for bad in ("", 3):
        with pytest.raises(ConfigError) as err:
            KeyMaker(scale, label=bad)  # type: ignore[arg-type]
        assert err.value.param == "label"
    with pytest.raises(ConfigError) as err:
        key_prefix("a b")
    assert err.value.param == "namespace"


def test_mp_main_is_main_in_labels_and_identities() -> None:
    # spawn/forkserver workers import the script as __mp_main__ (tests/test_keys_mp.py runs it
    # for real): the same function must get the same label and key.
    src = "def f(x):\n    return x + OFFSET\n"
    parent = build(src, module="__main__", OFFSET=1)
    worker = build(src, module="__mp_main__", OFFSET=1)
    assert KeyMaker(worker).label == KeyMaker(parent).label == "__main__.f"
    assert KeyMaker(worker)((1,), {}) == KeyMaker(parent)((1,), {})


def test_default_labels_of_other_callables() -> None:
    import functools

    class Call:
        def __call__(self, x: int) -> int:
            return x

    assert KeyMaker(functools.partial(scale, k=3.0)).label == f"{__name__}.scale"
    assert KeyMaker(Call()).label.endswith("Call")


# ------------------------------------------------------------------------------ parse_key
def test_parse_key_reads_what_key_maker_writes() -> None:
    for ns in ("", "proj.x", "ex3"):
        km = KeyMaker(scale, namespace=ns)
        key = km((1.0,), {})
        parts = parse_key(key)
        assert parts == KeyParts(ns, 3, km.tag, key.rsplit(":", 1)[1], "")
        assert not parts.auxiliary
        lease = parse_key(key + ":lease")
        assert lease is not None and lease.suffix == "lease" and lease.auxiliary
        chunk = parse_key(key + ":c3:9f8e")
        assert chunk is not None and chunk.suffix == "c3:9f8e" and chunk.digest == parts.digest
        manifest = parse_key(f"{km.prefix}manifest")
        assert manifest == KeyParts(ns, 3, km.tag, "", "manifest")


def test_parse_key_reads_format_2_and_refuses_everything_else() -> None:
    d = "0123456789abcdef" * 2
    assert parse_key(f"ex2:{d}") == KeyParts("", 2, "", d, "")
    assert parse_key(f"ns:ex2:{d}:lease") == KeyParts("ns", 2, "", d, "lease")
    tag = "a1b2c3d4e5f6"
    bad = [
        "",
        "ex3:",
        f"ex3:{tag}",
        f"ex3:{tag}:",
        f"ex3:{tag}:{d[:-1]}",
        f"ex3:{tag}:{d.upper()}",
        f"ex3:{tag.upper()}:{d}",
        f"ex3:zzzzzzzzzzzz:{d}",
        f"ex3:{tag}:{d}:",
        f"a b:ex3:{tag}:{d}",
        f"{'n' * 65}:ex3:{tag}:{d}",
        f"ex3:{tag}:{d} ",
        "lease",
        f"other:{d}",
    ]
    assert [k for k in bad if parse_key(k) is not None] == []


# ------------------------------------------------------------------------------ manifest
HELPERS = (
    "def helper(x):\n    return x + {h}\n"
    "def f(x, k={d}, *, m=1):\n    return helper(x) * k * SCALE * m\n"
)


def maker(h: int = 1, d: int = 2, scale_: float = 3.0, **kw: Any) -> KeyMaker:
    return KeyMaker(build(HELPERS.format(h=h, d=d), SCALE=scale_), **kw)


def changed_parts(a: KeyMaker, b: KeyMaker) -> set[str]:
    ma, mb = a.manifest(), b.manifest()
    return {n for n in ma.keys() | mb.keys() if ma.get(n) != mb.get(n)}


def test_manifest_names_every_part() -> None:
    m = maker().manifest()
    assert set(m) == {
        "code", "defaults", "kwdefaults", "function helper", "global SCALE",
        "version", "namespace", "key_format", "label",
    }  # fmt: skip
    assert all(isinstance(v, bytes) and len(v) == 16 for v in m.values())
    assert list(m) == sorted(m)
    closure = KeyMaker(_closure(1)).manifest()
    assert "closure k" in closure
    signed = KeyMaker(scale, signature=b"s").manifest()
    assert set(signed) == {"signature", "version", "namespace", "key_format", "label"}


def _closure(k: int) -> Any:
    def g(x: int) -> int:
        return x * k

    return g


def test_manifest_says_which_part_changed() -> None:
    base = maker()
    assert changed_parts(base, maker()) == set()
    assert changed_parts(base, maker(h=2)) == {"function helper"}
    assert changed_parts(base, maker(d=5)) == {"defaults"}
    assert changed_parts(base, maker(scale_=4.0)) == {"global SCALE"}
    assert changed_parts(base, maker(version="2")) == {"version"}
    assert changed_parts(base, maker(namespace="other")) == {"namespace"}
    assert changed_parts(base, maker(label="renamed")) == {"label"}
    assert changed_parts(KeyMaker(_closure(1)), KeyMaker(_closure(2))) == {"closure k"}
    g = build(HELPERS.format(h=1, d=2), SCALE=3.0)
    g.__kwdefaults__ = {"m": 7}
    assert changed_parts(base, KeyMaker(g)) == {"kwdefaults"}
    other_code = KeyMaker(build(HELPERS.format(h=1, d=2).replace("* m", "+ m"), SCALE=3.0))
    assert changed_parts(base, other_code) == {"code"}


def test_identity_is_a_function_of_the_manifest_parts() -> None:
    makers = [maker(), maker(), maker(h=2), maker(d=5), maker(version="x"), maker(label="l")]
    for a in makers:
        assert a.identity == identity_from_manifest(a.manifest())
        for b in makers:
            assert (a.identity == b.identity) == (a.manifest() == b.manifest())
    # The identity is what keys are made of: equal manifests, equal keys.
    assert makers[0]((1,), {}) == makers[1]((1,), {}) != makers[2]((1,), {})


# ------------------------------------------------------------------------------ argument digests
def varied(a: Any, b: Any = 2, *rest: Any, job_id: str = "", **opts: Any) -> Any:
    return a


def test_argument_digests_name_every_bound_argument() -> None:
    km = KeyMaker(varied, ignore_args=["job_id"])
    d = km.argument_digests((1, 2, "x", "y"), {"job_id": "j", "z": 3, "w": [1]})
    assert list(d) == ["a", "b", "rest[0]", "rest[1]", "w", "z"]
    assert all(len(v) == 8 for v in d.values())
    assert km.argument_digests((1,), {}) == {"a": d["a"], "b": d["b"]}  # default applied
    assert km.argument_digests((), {"a": 1, "b": 2}) == {"a": d["a"], "b": d["b"]}
    assert km.argument_digests((5,), {})["a"] != d["a"]


def test_pack_and_unpack_argument_digests() -> None:
    d = {"a": b"12345678", "ünï": b"abcdefgh", "x" * 100: b"zzzzzzzz"}
    packed = pack_argument_digests(d)
    assert unpack_argument_digests(packed) == {"a": d["a"], "ünï": d["ünï"], "x" * 64: d["x" * 100]}
    assert unpack_argument_digests(b"") == {}
    many = {f"arg{i}": i.to_bytes(8, "little") for i in range(1000)}
    packed = pack_argument_digests(many)
    assert len(packed) <= ARGS_LIMIT
    back = unpack_argument_digests(packed)
    assert list(back)[-1] == ARGS_TRUNCATED and back.pop(ARGS_TRUNCATED) == b""
    assert 250 < len(back) < 1000 and all(many[k] == v for k, v in back.items())
    for garbage in (
        b"\x02\x00",
        b"\x01",
        b"\x01\x00\x05ab",
        b"\x01\x00\x01\xff12345678",
        b"\x01\x04",
    ):
        with pytest.raises(ValueError, match="argument digests"):
            unpack_argument_digests(garbage)
    with pytest.raises(ValueError, match="8 bytes"):
        pack_argument_digests({"a": b"short"})
