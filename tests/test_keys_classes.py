"""Classes of the user's code are keyed by their content, wherever a class enters a key.

Format 2 keyed every class by ``module.qualname``: two local classes with the same qualified
name but different code shared keys (issue 11's reproduction), and editing a method of a
class passed as an argument, referred to as a global or whose instances were passed (a
dataclass, a ``__cache_key__`` object) never changed the key.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from expcache.errors import KeyEncodingError
from expcache.keys import KeyMaker, fingerprint, function_identity
from expcache.keys import identity as I

ROOT = Path(__file__).resolve().parents[1]


def fp(obj: Any, **kw: Any) -> str:
    return fingerprint(obj, **kw).hex()


def build(src: str, name: str = "Local", **globals_: Any) -> Any:
    """Compile ``src`` in a fresh module namespace: the same qualified names every time."""
    ns: dict[str, Any] = {"__name__": "generated", **globals_}
    exec(compile(src, "<generated>", "exec", dont_inherit=True), ns)  # no __future__ flags
    return ns[name]


PLAIN = "class Local:\n    def score(self, x):\n        return x + {c}\n"
DATA = (
    "import dataclasses\n"
    "@dataclasses.dataclass(frozen=True)\n"
    "class Local:\n    a: int\n    def score(self, x):\n        return x * self.a + {c}\n"
)
KEYED = "class Local:\n    def __cache_key__(self):\n        return 1\n    def run(self):\n        return {c}\n"


def test_two_local_classes_with_one_qualname_but_different_code_key_apart() -> None:
    one, two, again = build(PLAIN.format(c=1)), build(PLAIN.format(c=2)), build(PLAIN.format(c=1))
    assert one.__qualname__ == two.__qualname__ and one.__module__ == two.__module__
    assert fp(one) != fp(two)  # format 2: equal
    assert fp(one) == fp(again)  # same code, another class object: same key


def test_factory_made_classes_differ_by_what_their_methods_close_over() -> None:
    def make(offset: int) -> type:
        @dataclasses.dataclass
        class Shift:
            x: int

            def apply(self) -> int:
                return self.x + offset

        return Shift

    assert fp(make(1)(5)) != fp(make(2)(5))
    assert fp(make(1)(5)) == fp(make(1)(5))


@pytest.mark.parametrize("src", [DATA, KEYED], ids=["dataclass", "cache_key"])
def test_instances_carry_their_class_content(src: str) -> None:
    one, two = build(src.format(c=1)), build(src.format(c=2))
    args = (3,) if src is DATA else ()
    assert fp(one(*args)) != fp(two(*args))
    assert fp(one(*args)) == fp(build(src.format(c=1))(*args))


def test_a_class_as_argument_and_as_global() -> None:
    one, two = build(PLAIN.format(c=1)), build(PLAIN.format(c=2))
    km = KeyMaker(lambda cls, x: cls().score(x))
    assert km((one, 1), {}) != km((two, 1), {})
    src = "def f(x):\n    return MODEL().score(x)\n"
    f1 = build(src, "f", MODEL=one)
    f2 = build(src, "f", MODEL=two)
    assert function_identity(f1) != function_identity(f2)
    assert KeyMaker(f1).manifest()["global MODEL"] != KeyMaker(f2).manifest()["global MODEL"]


def test_other_instances_carry_their_class_too() -> None:
    # Stateless instances, enum members, namedtuples and estimator-like objects.
    stateless = "class Local:\n    def pick(self, x):\n        return x[{c}]\n"
    assert fp(build(stateless.format(c=0))()) != fp(build(stateless.format(c=1))())
    enum_src = "import enum\nclass Local(enum.Enum):\n    A = {c}\n"
    assert fp(build(enum_src.format(c=1)).A) != fp(build(enum_src.format(c=2)).A)
    nt = "import collections\nLocal = collections.namedtuple('Local', {c!r})\n"
    assert fp(build(nt.format(c="x y"))(1, 2)) != fp(build(nt.format(c="y x"))(1, 2))
    est = (
        "class Local:\n    def __init__(self, a=1):\n        self.a = a\n"
        "    def get_params(self, deep=True):\n        return {{'a': self.a}}\n"
        "    def fit(self, x):\n        return self.a * {c}\n"
    )
    assert fp(build(est.format(c=1))()) != fp(build(est.format(c=2))())


def test_bases_members_and_class_level_data_count() -> None:
    base1 = build("class Base:\n    def f(self):\n        return 1\n", "Base")
    base2 = build("class Base:\n    def f(self):\n        return 2\n", "Base")
    child = "class Local(Base):\n    SCALE = {c}\n    @staticmethod\n    def g():\n        return 0\n"
    assert fp(build(child.format(c=1), Base=base1)) != fp(build(child.format(c=1), Base=base2))
    assert fp(build(child.format(c=1), Base=base1)) != fp(build(child.format(c=2), Base=base1))
    props = "class Local:\n    @property\n    def v(self):\n        return {c}\n"
    assert fp(build(props.format(c=1))) != fp(build(props.format(c=2)))
    kinds = "class Local:\n    @{d}\n    def v(cls):\n        return 1\n"
    assert fp(build(kinds.format(d="classmethod"))) != fp(build(kinds.format(d="staticmethod")))


def test_library_classes_are_keyed_by_name() -> None:
    out: list[bytes] = []
    I.E.encode(collections.Counter, out, I.Ctx(False))
    assert out == [I.T.TYPE_NAME + I.s("collections.Counter")]
    assert not I.is_user_class(int) and not I.is_user_class(threading.Thread)
    assert I.is_user_class(build(PLAIN.format(c=1)))


def test_a_method_that_names_its_own_class() -> None:
    src = "class Local:\n    def clone(self):\n        return Local()\n    def v(self):\n        return {c}\n"
    assert fp(build(src.format(c=1))) != fp(build(src.format(c=2)))
    assert fp(build(src.format(c=1))) == fp(build(src.format(c=1)))


MUTUAL = (
    "class A:\n    def other(self):\n        return B\n    def v(self):\n        return {a}\n"
    "class B:\n    def other(self):\n        return A\n    def v(self):\n        return {b}\n"
)


def _mutual(a: int, b: int) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "generated"}
    exec(compile(MUTUAL.format(a=a, b=b), "<generated>", "exec", dont_inherit=True), ns)
    return ns


def test_mutual_references_terminate_and_see_both_classes() -> None:
    base, changed_b = _mutual(1, 1), _mutual(1, 2)
    assert fp(base["A"]) != fp(changed_b["A"])  # A refers to B: B's code is part of A
    assert fp(base["A"]) != fp(base["B"])


def test_mutual_digests_do_not_depend_on_which_class_came_first() -> None:
    # B's digest computed while A was open refers back to A: it must not be cached, or keys
    # would depend on the order classes were first seen in a process.
    first = _mutual(1, 1)
    a_then_b = (fp(first["A"]), fp(first["B"]))
    second = _mutual(1, 1)
    b_then_a = (fp(second["B"]), fp(second["A"]))
    assert a_then_b == (b_then_a[1], b_then_a[0])


HELPER_CYCLE = (
    "class Model:\n    def __init__(self, w):\n        self.w = w\n"
    "    def __cache_key__(self):\n        return self.w\n"
    "    def refit(self):\n        return rebuild(self)\n"
    "def rebuild(m):\n    return Model(m.w + {c})\n"
)


def _helper_cycle(c: int) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "generated"}
    exec(compile(HELPER_CYCLE.format(c=c), "<generated>", "exec", dont_inherit=True), ns)
    return ns


def test_a_class_and_a_helper_that_refer_to_each_other() -> None:
    # Keys must not depend on whether the class or the function was met first in a process.
    first = _helper_cycle(1)
    model_first = (fp(first["Model"](2)), KeyMaker(first["rebuild"]).identity)
    second = _helper_cycle(1)
    identity = KeyMaker(second["rebuild"]).identity
    helper_first = (fp(second["Model"](2)), identity)
    assert model_first == helper_first
    changed = _helper_cycle(2)  # the helper's code is part of the class's content
    assert fp(changed["Model"](2)) != model_first[0]


def test_a_class_digest_is_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    Local = build(DATA.format(c=1))
    walks: list[type] = []
    real = I._CLASS.content

    def counting(cls: type, ctx: I.Ctx) -> bytes:
        walks.append(cls)
        return real(cls, ctx)

    monkeypatch.setattr(I, "_CLASS", I._CLASS._replace(content=counting))
    km = KeyMaker(lambda p: p.a)
    keys = {km((Local(i % 3),), {}) for i in range(50)}
    assert len(keys) == 3
    assert walks == [Local]  # the hit path looks the digest up; it never re-walks methods


def test_class_digests_are_not_kept_alive() -> None:
    import gc

    Local = build(PLAIN.format(c=7))
    fp(Local)
    assert Local in I._CLASS_REFS[False]
    alive = weakref.ref(Local)
    del Local
    gc.collect()
    assert alive() is None


class Opaque:
    def __init__(self) -> None:
        self.v = 1


def test_unencodable_class_data_follows_the_variable_rule() -> None:
    src = "class Local:\n    CLIENT = CLIENT\n    LOCK = LOCK\n    def __cache_key__(self):\n        return 1\n"
    Local = build(src, CLIENT=Opaque(), LOCK=threading.Lock())
    with pytest.raises(KeyEncodingError, match=r"in class attribute CLIENT of Local .*pickle_args"):
        fingerprint(Local())
    assert len(fingerprint(Local(), pickle_args=True)) == 16  # the lock counts by its type


def test_dunder_bookkeeping_does_not_change_a_class_key() -> None:
    # copyreg adds __slotnames__ to a class the first time an instance is pickled: a key
    # that saw it would differ between a process that pickled and one that did not.
    import pickle

    src = "class Local:\n    __slots__ = ('a',)\n    def __init__(self):\n        self.a = 1\n"
    before = build(src)
    after = build(src)
    sys.modules["generated_slots"] = mod = type(sys)("generated_slots")
    try:
        after.__module__ = before.__module__ = "generated_slots"
        mod.Local = after
        pickle.dumps(after())
        assert "__slotnames__" in after.__dict__
        I._CLASS_REFS[False].pop(before, None)
        assert fp(before) == fp(after)
    finally:
        del sys.modules["generated_slots"]


@pytest.mark.slow
def test_class_keys_agree_across_processes() -> None:
    code = (
        "import dataclasses, enum\n"
        "from expcache.keys import fingerprint\n"
        "@dataclasses.dataclass\n"
        "class P:\n    a: int\n    def f(self):\n        return Q\n"
        "class Q(enum.Enum):\n    X = 1\n    def g(self):\n        return P\n"
        "print(fingerprint([P(1), Q.X, P, Q]).hex())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert enum.Enum  # the subprocess defines its own; nothing is shared with this one
