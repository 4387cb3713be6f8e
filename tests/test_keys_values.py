"""Value encodings new in key format 3: OrderedDict order, numpy random objects, typing
constructs and compiled patterns, and user-registered encoders (``register_encoder``)."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from expcache import Memoized, MemoryBackend, register_encoder
from expcache.errors import ConfigError, KeyEncodingError
from expcache.keys import KeyMaker, fingerprint, objects

ROOT = Path(__file__).resolve().parents[1]


def fp(obj: Any, **kw: Any) -> str:
    return fingerprint(obj, **kw).hex()


# ------------------------------------------------------------------------------ OrderedDict
def first_key(d: OrderedDict[str, int]) -> str:
    return next(iter(d))


def test_ordered_dict_arguments_keep_their_order() -> None:
    ab, ba = OrderedDict([("a", 1), ("b", 2)]), OrderedDict([("b", 2), ("a", 1)])
    assert fp(ab) != fp(ba)  # format 2: equal
    assert fp(ab) == fp(OrderedDict([("a", 1), ("b", 2)]))
    assert fp(ab) != fp({"a": 1, "b": 2})
    assert fp(ba) != fp(dict(ba))
    assert fp({"a": 1, "b": 2}) == fp({"b": 2, "a": 1})  # a plain dict stays order-free

    class Sub(OrderedDict[str, int]):
        pass

    assert fp(Sub(ab)) != fp(Sub(ba))  # subclasses keep the order too


def test_memoized_first_key_sees_both_orders() -> None:
    # Issue 11's reproduction: the seed returned "a" for both orders.
    m = Memoized(first_key, MemoryBackend(), time_threshold=0)
    assert m(OrderedDict([("a", 1), ("b", 2)])) == "a"
    assert m(OrderedDict([("b", 2), ("a", 1)])) == "b"
    assert m.stats.misses == 2


# ------------------------------------------------------------------------------ canonical forms
def test_sets_of_ints_and_str_keyed_dicts_keep_numpy_scalar_equivalence() -> None:
    assert fp({1, 2, 3}) == fp({np.int64(3), np.int32(2), 1})
    assert fp(frozenset({2**70, 1})) == fp(frozenset({1, 2**70}))  # too wide for 8 bytes
    assert fp({1, 2}) != fp({1.0, 2.0}) != fp({True, 2})
    assert fp({1, 2}) != fp(frozenset({1, 2}))
    assert fp({"a": 1, "b": 2}) == fp({np.str_("b"): 2, np.str_("a"): 1})
    assert fp({"a": 1}) != fp({b"a": 1})


def test_patterns_and_annotations() -> None:
    assert fp(re.compile("a+")) == fp(re.compile("a+"))
    assert fp(re.compile("a+")) != fp(re.compile("a+", re.I)) != fp(re.compile(b"a+"))
    assert fp(list[int]) != fp(list[str]) != fp(list)
    typing_optional = Optional[int]  # noqa: UP045 - typing's construct, not int | None
    assert fp(typing_optional) == fp(Optional[int]) != fp(Optional[str])  # noqa: UP045
    assert fp(int | None) != fp(int)


# ------------------------------------------------------------------------------ numpy random
def test_seed_sequences_key_by_their_state() -> None:
    ss = np.random.SeedSequence(42)
    assert fp(ss) == fp(np.random.SeedSequence(42))
    assert fp(ss) != fp(np.random.SeedSequence(43))
    assert fp(ss) != fp(np.random.SeedSequence(42, spawn_key=(1,)))
    assert fp(np.random.SeedSequence([1, 2])) == fp(np.random.SeedSequence(np.array([1, 2])))
    child = np.random.SeedSequence(42).spawn(2)[1]
    assert fp(child) == fp(np.random.SeedSequence(42, spawn_key=(1,)))
    spawned = np.random.SeedSequence(42)
    spawned.spawn(1)  # n_children_spawned decides what the next spawn() gives
    assert fp(spawned) != fp(ss)
    with pytest.raises(KeyEncodingError):  # format 2 (and pickle_args=False) refused these
        fingerprint(object.__new__(type("Opaque", (), {"__slots__": ("x",)})))


def test_generators_key_by_class_and_state() -> None:
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    assert fp(a) == fp(b)
    a.random()  # the state moved: another stream of numbers, another key
    assert fp(a) != fp(b)
    b.random()
    assert fp(a) == fp(b)
    assert fp(np.random.Generator(np.random.PCG64(1))) != fp(
        np.random.Generator(np.random.MT19937(1))
    )
    assert fp(np.random.RandomState(0)) == fp(np.random.RandomState(0)) != fp(
        np.random.RandomState(1)
    )
    assert fp(np.random.PCG64(5)) != fp(np.random.default_rng(5))


@pytest.mark.slow
def test_a_seed_sequence_keys_identically_across_processes() -> None:
    code = (
        "import numpy as np\nfrom expcache.keys import fingerprint\n"
        "ss = np.random.SeedSequence(20240101)\n"
        "print(fingerprint([ss, ss.spawn(2)[1], np.random.default_rng(ss)]).hex())\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for seed in ("0", "99")
    }
    ss = np.random.SeedSequence(20240101)
    assert outs == {fp([ss, ss.spawn(2)[1], np.random.default_rng(ss)])}


# ------------------------------------------------------------------------------ register_encoder
class Vendor:
    """A third-party-like class: C-ish state, no __dict__, no __cache_key__."""

    __slots__ = ("cfg", "handle")

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.handle = object()  # e.g. a native resource: must not enter the key


class VendorChild(Vendor):
    __slots__ = ()


class Twin:
    __slots__ = ("cfg",)

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg


@pytest.fixture
def registry() -> Iterator[list[type]]:
    registered: list[type] = []
    yield registered
    for t in registered:
        objects._unregister(t)


def test_a_registered_encoder_keys_a_third_party_class(registry: list[type]) -> None:
    with pytest.raises(KeyEncodingError, match="register_encoder"):
        fingerprint(Vendor({"a": 1}))
    register_encoder(Vendor, lambda v: v.cfg)
    registry.append(Vendor)
    assert fp(Vendor({"a": 1})) == fp(Vendor({"a": 1}))
    assert fp(Vendor({"a": 1})) != fp(Vendor({"a": 2}))
    km = KeyMaker(lambda model, x: x)
    assert km((Vendor({"a": 1}), 1), {}) == km((Vendor({"a": 1}), 1), {})


def test_registered_types_with_equal_stand_ins_differ(registry: list[type]) -> None:
    register_encoder(Vendor, lambda v: v.cfg)
    register_encoder(Twin, lambda v: v.cfg)
    registry += [Vendor, Twin]
    assert fp(Vendor({"a": 1})) != fp(Twin({"a": 1}))
    assert fp(Vendor({"a": 1})) != fp({"a": 1})


def test_exact_type_first_then_mro_and_re_registration_replaces(registry: list[type]) -> None:
    register_encoder(Vendor, lambda v: ("base", v.cfg))
    registry.append(Vendor)
    child = VendorChild({"a": 1})
    assert fp(child) != fp(Vendor({"a": 1}))  # found through the MRO, keyed as the child
    before = fp(child)
    register_encoder(VendorChild, lambda v: ("child", v.cfg))
    registry.append(VendorChild)
    assert fp(child) != before  # the exact match wins over the base's encoder
    register_encoder(VendorChild, lambda v: ("child", v.cfg, 2))
    assert fp(child) not in (before,)
    again = fp(child)
    register_encoder(VendorChild, lambda v: ("child", v.cfg))
    assert fp(child) != again  # re-registration replaced the encoder


def test_register_encoder_checks_its_arguments(registry: list[type]) -> None:
    with pytest.raises(ConfigError, match=r"^type="):
        register_encoder(Vendor({}), repr)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^fn="):
        register_encoder(Vendor, "repr")  # type: ignore[arg-type]
    for builtin in (dict, int, np.ndarray, OrderedDict):
        with pytest.raises(ConfigError, match="built-in encoding"):
            register_encoder(builtin, repr)
    register_encoder(Vendor, lambda v: threading.Lock())  # a stand-in must be encodable
    registry.append(Vendor)
    with pytest.raises(KeyEncodingError, match="registered encoder"):
        fingerprint(Vendor({}))

    def broken(v: Vendor) -> Any:
        raise RuntimeError("boom")

    register_encoder(Vendor, broken)
    with pytest.raises(KeyEncodingError, match="boom"):
        fingerprint(Vendor({}))


@pytest.mark.pydvl
def test_the_pydvl_integration_can_use_a_registered_encoder(registry: list[type]) -> None:
    # utility_fingerprint asks for signature= when a model has no encoding; registering one
    # for the model's class is enough -- what the integration's own describe() could become.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pytest.importorskip("pydvl")
        from pydvl.valuation import Dataset, ModelUtility, SupervisedScorer
    from sklearn.datasets import make_classification

    from expcache.integrations.pydvl import utility_fingerprint

    class SlotModel:
        __slots__ = ("w",)

        def __init__(self, w: float) -> None:
            self.w = w

        def fit(self, x: Any, y: Any) -> SlotModel:
            return self

    x, y = make_classification(n_samples=40, n_features=4, random_state=0)
    train, test = Dataset.from_arrays(x, y, train_size=20, random_state=0)

    def utility(w: float) -> Any:
        scorer = SupervisedScorer("accuracy", test, 0.0)
        return ModelUtility(SlotModel(w), scorer, clone_before_fit=False).with_dataset(train)

    with pytest.raises(KeyEncodingError, match="signature="):
        utility_fingerprint(utility(1.0))
    register_encoder(SlotModel, lambda m: m.w)
    registry.append(SlotModel)
    assert utility_fingerprint(utility(1.0)) == utility_fingerprint(utility(1.0))
    assert utility_fingerprint(utility(1.0)) != utility_fingerprint(utility(2.0))


def test_counter_and_defaultdict_stay_order_free_with_their_class() -> None:
    assert fp(collections.Counter("abca")) == fp(collections.Counter("acba"))
    assert fp(collections.Counter("ab")) != fp({"a": 1, "b": 1})
    dd = collections.defaultdict(list, {"a": [1]})
    assert fp(dd) != fp(collections.defaultdict(set, {"a": [1]}))
