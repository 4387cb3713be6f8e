"""Tests of expcache.keys: canonical encoding, function identity, binding and key format.

Each "collision" test below reproduces a pair of calls that the first, bytecode-only design
mapped to one key although their results differ.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib
import logging
import os
import pathlib
import re
import struct
import subprocess
import sys
import threading
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from expcache.errors import ConfigError, KeyEncodingError
from expcache.keys import KEY_FORMAT_VERSION, KeyMaker, fingerprint, function_identity, tags
from expcache.keys.encode import Ctx, encode, s

HELPER = importlib.import_module(
    f"{__package__}.keys_golden_helper" if __package__ else "keys_golden_helper"
)
ROOT = Path(__file__).resolve().parents[1]


def fp(obj: Any, **kw: Any) -> str:
    return fingerprint(obj, **kw).hex()


def exec_fn(src: str, name: str = "f", **globals_: Any) -> Any:
    """Compile ``src`` in a fresh module namespace: same code, chosen globals."""
    ns: dict[str, Any] = {"__name__": "generated", **globals_}
    exec(src, ns)
    return ns[name]


# ------------------------------------------------------------------------------ golden digests
# Pinned once. If one of these fails, the byte encoding changed: bump KEY_FORMAT_VERSION and
# re-pin, otherwise old entries would be read back under a different meaning.
GOLDEN_VALUES: dict[str, tuple[Any, str]] = {
    "none": (None, "626d368fe0e74b4f1a038927df1311d6"),
    "true": (True, "df3ce784d856334d65cd25028f98f158"),
    "int": (-7, "2cc502e6df105d8d47704501b6148feb"),
    "bigint": (2**100, "6ee080c6fd1e044895fc0d56e6d81689"),
    "float": (1.5, "770487274eba5d21f254a1028442cd27"),
    "negzero": (-0.0, "f6b43928ce5e5192820ab6b29963bd6b"),
    "nan": (float("nan"), "1420def684ff33195e46be79eb2f1aac"),
    "complex": (1 - 2j, "d85f76db5ceba3083424d63f7da2546c"),
    "str": ("héllo", "471d2b85742b9643143cd27e33b1eefd"),
    "bytes": (b"\x00\xff", "2ef110daabe16e5082ff6346129aed8c"),
    "tuple": ((1, "a"), "f30f7a978b13715c6e2e9eb0ee14cea5"),
    "list": ([1, "a"], "2791277a5739da5f59e111b56fc2c93b"),
    "dict": ({"b": [1, 2.5], "a": (None, True)}, "a3c15a25028d0e4caf608068fd5d9472"),
    "set": ({3, 1, 2}, "a708c6916bf10d3b61bd732ecd54b642"),
    "frozenset": (frozenset({"x", "y"}), "9be1c0061861b4cfcae16cdc525849df"),
    "array": (np.arange(6, dtype=np.float64).reshape(2, 3), "a4d3345b7fadf543f6ac20656980e75f"),
    "int32s": (np.array([1, -2], dtype=np.int32), "4e21a4b7f8f64b2dbd755f34fc3aa03d"),
    "f32": (np.float32(0.5), "ded3572edca2607d0876f06279d9b870"),
    "datetime": (dt.datetime(2024, 1, 2, 3, 4, 5, 6), "e0c6dfbd457d3bc87f4343f1bd51ff6b"),
    "path": (pathlib.PurePosixPath("/data/x.csv"), "e6cb5647cad88936d95486b31e80a7a7"),
    "range": (range(0, 10, 2), "284c6c234d0a26b47601daa47a23c110"),
    "decimal": (decimal.Decimal("1.10"), "6fd92ff98086df58c69d40f60bb67ab6"),
    "intdict": ({2: 'b', 1: None}, "eea81c9fa9f77dd850d9df6c50606ace"),
    "odict": (OrderedDict([('b', 1), ('a', 2)]), "8ad03faa7a486353932ba987e77e791c"),
    "mixedset": ({1.5, 'a', 2}, "5d64d1129552676434e5820a0bf4059a"),
    "seedseq": (np.random.SeedSequence(42, spawn_key=(1,)), "18154c7d770cace95259ca2db31b55c6"),
    "generator": (np.random.default_rng(7), "9bac3494893d7e60b597a03b1a037482"),
    "pattern": (re.compile(r'a+b', re.I), "b2a3c1479015ef3951739bac518d2b0d"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_VALUES))
def test_golden_value_digests(name: str) -> None:
    value, expected = GOLDEN_VALUES[name]
    assert fp(value) == expected


def _golden_call(a: Any, b: float = 2.0, *rest: Any, c: str = "x", **kw: Any) -> Any:
    return a


def test_golden_call_keys() -> None:
    # signature= and label= pin the function part: these depend only on the argument encoding.
    km = KeyMaker(_golden_call, signature=b"golden-signature", label="golden")
    assert km((1,), {}) == "ex3:7d263ba9f3ff:58831bcdcad1bc843058cbce141531ed"
    extra = {"c": "y", "z": [1], "w": {"k": np.arange(3)}}
    assert km((1, 2.0, 3, 4), extra) == "ex3:7d263ba9f3ff:d631db5cf306c4824740ec175f88cae5"
    km2 = KeyMaker(
        _golden_call, signature=b"golden-signature", version="2", namespace="proj.x", label="golden"
    )
    assert km2((1,), {}) == "proj.x:ex3:7d263ba9f3ff:e94703b0a3d6174e7378106cfd26ed72"
    assert KEY_FORMAT_VERSION == 3


# Bytecode differs between Python minor versions, so the function part is pinned per version.
GOLDEN_IDENTITY = {
    (3, 10): "de9876fef0b9960ea0806583a2c82ca4",
    (3, 11): "292449bdbf2856e317dd32c7337338a8",
    (3, 12): "43b9315f24cd8df7caf25bd7a1b9984b",
    (3, 13): "91ad254890214911c7b6cd0936fa7b7f",
}


def test_golden_function_identity() -> None:
    expected = GOLDEN_IDENTITY.get(sys.version_info[:2])
    if expected is None:
        pytest.skip("no golden identity pinned for this Python version")
    ns: dict[str, Any] = {"__name__": "golden_mod", "SCALE": 2.5}
    src = "def f(x, k=3):\n    return [i * k for i in range(x)] + [SCALE]\n"
    exec(compile(src, "<golden>", "exec", dont_inherit=True), ns)  # no __future__ flags
    assert function_identity(ns["f"]).hex() == expected


# ------------------------------------------------------------------------------ stability
@pytest.mark.slow
def test_same_key_in_subprocesses_with_other_hash_seeds() -> None:
    paths = [str(ROOT / "src"), str(ROOT), str(ROOT / "tests")]
    code = "import importlib, sys; print(importlib.import_module(sys.argv[1]).golden_key())"
    keys = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(paths)}
        run = subprocess.run(
            [sys.executable, "-c", code, HELPER.__name__],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        keys.add(run.stdout.strip())
    assert keys == {HELPER.golden_key()}
    assert re.fullmatch(r"golden:ex3:[0-9a-f]{12}:[0-9a-f]{32}", keys.pop())


@pytest.mark.slow
def test_import_does_not_pull_heavy_dependencies() -> None:
    # Load expcache.keys without the package __init__ (which other modules own).
    code = (
        "import sys, types; pkg = types.ModuleType('expcache'); "
        f"pkg.__path__ = [{str(ROOT / 'src' / 'expcache')!r}]; sys.modules['expcache'] = pkg; "
        "import expcache.keys; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'pydvl', 'hydra', 'omegaconf') "
        "if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert run.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ properties
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def canon(x: Any) -> Any:
    """What the key must distinguish: type, exact float bits (one NaN), structure."""
    if isinstance(x, float):
        return ("float", struct.pack("<d", x) if x == x else "nan")
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(canon(i) for i in x))
    if isinstance(x, dict):
        return ("dict", frozenset((k, canon(v)) for k, v in x.items()))
    return (type(x).__name__, x)


@given(values, values)
def test_equal_keys_iff_canonically_equal(x: Any, y: Any) -> None:
    assert (fp(x) == fp(y)) == (canon(x) == canon(y))


@given(values)
def test_copies_have_equal_keys(x: Any) -> None:
    assert fp(copy.deepcopy(x)) == fp(x)


@given(st.dictionaries(st.text(max_size=6), scalars, max_size=8), st.data())
def test_dict_key_ignores_insertion_order(d: dict[str, Any], data: st.DataObject) -> None:
    shuffled = dict(data.draw(st.permutations(list(d.items()))))
    assert fp(shuffled) == fp(d)
    if len(d) > 1:  # OrderedDict: the order is part of the value (tests/test_keys_values.py)
        assert fp(OrderedDict(reversed(list(d.items())))) != fp(OrderedDict(d.items()))


@given(st.lists(st.integers() | st.text(max_size=6), unique=True, max_size=12), st.data())
def test_set_key_ignores_iteration_order(items: list[Any], data: st.DataObject) -> None:
    other = data.draw(st.permutations(items))
    assert fp(set(other)) == fp(set(items))
    assert fp(frozenset(other)) == fp(frozenset(items))
    assert fp(set(items)) != fp(frozenset(items))


@given(st.floats(allow_nan=True), st.integers(-(2**63), 2**63 - 1), st.booleans())
def test_numpy_scalars_key_like_python_scalars(f: float, i: int, b: bool) -> None:
    assert fp(np.float64(f)) == fp(f)
    assert fp(np.int64(i)) == fp(i)
    assert fp(np.int32(i % 2**31)) == fp(i % 2**31)
    assert fp(np.bool_(b)) == fp(b)
    assert fp([np.float64(f), np.int64(i)]) == fp([f, i])


def _bits(v: float) -> bytes:
    return struct.pack("<d", v) if v == v else b"nan"


@given(st.lists(st.integers(), min_size=1, max_size=20), st.data())
def test_changing_any_int_changes_the_key(xs: list[int], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(xs) - 1))
    changed = [*xs[:i], data.draw(st.integers().filter(lambda v: v != xs[i])), *xs[i + 1 :]]
    assert fp(changed) != fp(xs)


@given(st.lists(st.floats(allow_nan=True), min_size=1, max_size=20), st.data())
def test_changing_any_float_changes_the_key(xs: list[float], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(xs) - 1))
    new = data.draw(st.floats(allow_nan=True).filter(lambda v: _bits(v) != _bits(xs[i])))
    assert fp([*xs[:i], new, *xs[i + 1 :]]) != fp(xs)


@settings(deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3), elements=st.floats(-1e9, 1e9)),
    st.data(),
)
def test_changing_any_array_element_changes_the_key(
    a: np.ndarray[Any, Any], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, a.size - 1))
    b = a.copy().reshape(-1)
    b[i] = data.draw(st.floats(-1e9, 1e9).filter(lambda v: _bits(v) != _bits(float(b[i]))))
    assert fp(b.reshape(a.shape)) != fp(a)
    assert fp(a.reshape(-1)) != fp(a) or a.ndim == 1  # shape is part of the key


@settings(deadline=None)
@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3)))
def test_equal_arrays_built_differently_have_equal_keys(a: np.ndarray[Any, Any]) -> None:
    interleaved = np.stack([a, a + 1], axis=-1)[..., 0]  # a strided, non-contiguous view
    assert a.size == 1 or not interleaved.flags.c_contiguous
    assert fp(interleaved) == fp(a)
    assert fp(np.asfortranarray(a)) == fp(a)
    assert fp(a.astype(">i8")) == fp(a)
    assert fp(a.astype(np.int32)) != fp(a)  # dtype is part of the key


# ------------------------------------------------------------------------------ encoding rules
def test_value_distinctions_that_matter() -> None:
    assert fp(1) != fp(1.0) != fp(True)
    assert fp(0.0) != fp(-0.0)  # documented: distinct keys
    nan_payload = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\xff")[0]
    assert fp(float("nan")) == fp(-float("nan")) == fp(np.nan) == fp(nan_payload)
    assert fp((1, 2)) != fp([1, 2])
    assert fp(("ab",)) != fp(("a", "b"))
    assert fp("a") != fp(b"a") != fp(bytearray(b"a"))
    assert fp(2**64) != fp(2**64 + 1) != fp(-(2**64))
    assert fp(np.float32(0.5)) != fp(0.5)  # lower-precision scalars keep their dtype
    assert fp(np.arange(3)) != fp([0, 1, 2])
    assert fp(np.arange(6).reshape(2, 3)) != fp(np.arange(6).reshape(3, 2))
    assert fp(pathlib.Path("a")) != fp("a")
    assert fp(dt.date(2024, 1, 1)) != fp(dt.datetime(2024, 1, 1))
    utc = dt.timezone.utc
    assert fp(dt.datetime(2024, 1, 1, tzinfo=utc)) != fp(dt.datetime(2024, 1, 1))
    assert fp(slice(1, 2)) != fp(range(1, 2))
    assert fp(int) != fp(float)
    assert fp(np.array(["a", None], dtype=object)) == fp(np.array(["a", None], dtype=object))
    assert fp(np.array(["a", 1], dtype=object)) != fp(np.array(["a", 2], dtype=object))


class Color(enum.Enum):
    RED = 1
    BLUE = 2


Point = namedtuple("Point", "x y")


@dataclasses.dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    name: str = "d"


class Keyed:
    def __init__(self, payload: Any, cache: Any = None) -> None:
        self.payload = payload
        self.cache = cache  # not part of the identity: __cache_key__ decides

    def __cache_key__(self) -> Any:
        return self.payload


def test_structured_values() -> None:
    assert fp(Color.RED) != fp(Color.BLUE) != fp(1)
    assert fp(Point(1, 2)) != fp((1, 2))
    a, b = np.arange(4.0), np.arange(4.0)
    assert fp(Dataset(a, a)) == fp(Dataset(b.copy(), b.copy()))
    assert fp(Dataset(a, a)) != fp(Dataset(a, a + 1))
    assert fp(Keyed(1, cache=object())) == fp(Keyed(1, cache=threading.Lock()))
    assert fp(Keyed(1)) != fp(Keyed(2)) != fp(1)
    masked = np.ma.array([1.0, 2.0], mask=[False, True])
    assert fp(masked) == fp(np.ma.array([1.0, 99.0], mask=[False, True]))
    assert fp(masked) != fp(np.array([1.0, 0.0]))


def test_reference_cycle_is_an_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(KeyEncodingError, match="cycle"):
        fingerprint(loop)
    arr = np.empty(2, dtype=object)
    arr[1] = arr
    with pytest.raises(KeyEncodingError, match="cycle"):
        fingerprint(arr)
    node = Keyed(None)
    node.payload = node
    with pytest.raises(KeyEncodingError, match="cycle"):
        fingerprint(node)


class FakeEstimator:
    """The scikit-learn protocol: constructor parameters in get_params, fitted state in x_."""

    def __init__(self, alpha: float = 1.0, inner: Any = None) -> None:
        self.alpha = alpha
        self.inner = inner

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"alpha": self.alpha, "inner": self.inner}

    def fit(self, x: Any) -> FakeEstimator:
        self.coef_ = np.asarray(x).mean()
        return self


def test_estimators_key_by_params_only_while_unfitted() -> None:
    assert fp(FakeEstimator(1.0)) == fp(FakeEstimator(1.0))
    assert fp(FakeEstimator(1.0)) != fp(FakeEstimator(2.0))
    assert fp(FakeEstimator(inner=FakeEstimator(1.0))) != fp(
        FakeEstimator(inner=FakeEstimator(3.0))
    )
    fitted = FakeEstimator(1.0).fit([1, 2])
    with pytest.raises(KeyEncodingError, match=r"fitted estimator \('coef_'"):
        fingerprint(fitted, name="model")
    other = FakeEstimator(1.0).fit([5, 6])
    assert fp(fitted, pickle_args=True) != fp(other, pickle_args=True)


def test_pandas_by_contents() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}, index=["r1", "r2"])
    assert fp(df) == fp(df.copy())
    assert fp(df) != fp(df.assign(b=[0.5, 2.5]))
    assert fp(df) != fp(df[["b", "a"]])
    assert fp(df) != fp(df.set_axis(["r1", "r3"]))
    assert fp(df["a"]) == fp(pd.Series([1, 2], index=["r1", "r2"], name="a"))
    assert fp(df["a"]) != fp(df["a"].rename("z"))
    assert fp(pd.Index([0, 1, 2])) == fp(pd.RangeIndex(3))
    assert fp(pd.Timestamp("2024-01-01", tz="UTC")) != fp(pd.Timestamp("2024-01-01"))
    assert fp(pd.Timedelta("1s")) != fp(pd.Timedelta("2s"))
    assert fp(pd.Series([1, None], dtype="Int64")) != fp(pd.Series([1, 2], dtype="Int64"))


# ------------------------------------------------------------------------------ function identity
def _make_scaler(k: Any) -> Any:
    def scale(x: Any) -> Any:
        return x * k

    return scale


def _make_defaulted(d: Any) -> Any:
    def f(x: Any, k: Any = d, *, m: Any = d) -> Any:
        return x * k * m

    return f


def test_collision_same_code_different_closures() -> None:
    assert function_identity(_make_scaler(2)) != function_identity(_make_scaler(3))
    assert function_identity(_make_scaler(np.ones(3))) != function_identity(
        _make_scaler(np.zeros(3))
    )
    assert function_identity(_make_scaler(2)) == function_identity(_make_scaler(2))
    assert KeyMaker(_make_scaler(2))((1,), {}) != KeyMaker(_make_scaler(3))((1,), {})


def test_collision_different_defaults() -> None:
    assert function_identity(_make_defaulted(1)) != function_identity(_make_defaulted(2))
    assert function_identity(_make_defaulted(1)) == function_identity(_make_defaulted(1))
    f = _make_defaulted(1)
    g = _make_defaulted(1)
    g.__kwdefaults__ = {"m": 5}
    assert function_identity(f) != function_identity(g)


def test_collision_same_code_different_global_data() -> None:
    src = "def f(x):\n    return x * SCALE + OFFSETS['a']\n"
    f1 = exec_fn(src, SCALE=np.arange(3.0), OFFSETS={"a": 1})
    f2 = exec_fn(src, SCALE=np.arange(3.0) + 1, OFFSETS={"a": 1})
    f3 = exec_fn(src, SCALE=np.arange(3.0), OFFSETS={"a": 2})
    f4 = exec_fn(src, SCALE=np.arange(3.0), OFFSETS={"a": 1})
    ids = [function_identity(f) for f in (f1, f2, f3, f4)]
    assert len({ids[0], ids[1], ids[2]}) == 3
    assert ids[0] == ids[3]


def test_collision_lambdas_differing_only_in_nested_constant() -> None:
    one = lambda: lambda: 1  # noqa: E731
    two = lambda: lambda: 2  # noqa: E731
    assert one.__code__.co_code == two.__code__.co_code
    assert function_identity(one) != function_identity(two)
    src = (
        "def f(xs):\n    def inner(v):\n        return [v + {c} for _ in xs]\n    return inner(0)\n"
    )
    assert function_identity(exec_fn(src.format(c=1))) != function_identity(
        exec_fn(src.format(c=2))
    )


def test_collision_helper_functions_are_followed() -> None:
    src = "def helper(x):\n    return x + {c}\n\ndef f(x):\n    return helper(x)\n"
    assert function_identity(exec_fn(src.format(c=1))) != function_identity(
        exec_fn(src.format(c=2))
    )
    assert function_identity(exec_fn(src.format(c=1))) == function_identity(
        exec_fn(src.format(c=1))
    )


class Utility:
    """pyDVL-like: a callable holding a dataset; __cache_key__ says which data matter."""

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self.data = data
        self.calls = 0

    def __call__(self, subset: tuple[int, ...]) -> float:
        self.calls += 1
        return float(self.data[list(subset)].sum())

    def __cache_key__(self) -> Any:
        return self.data


@dataclasses.dataclass
class DataUtility:
    data: Dataset

    def __call__(self, subset: tuple[int, ...]) -> float:
        return float(self.data.x[list(subset)].sum())


def test_collision_same_callable_class_over_two_datasets() -> None:
    d1, d2 = np.arange(5.0), np.arange(5.0) * 2
    k1 = KeyMaker(Utility(d1))(((0, 1),), {})
    assert k1 != KeyMaker(Utility(d2))(((0, 1),), {})
    assert k1 == KeyMaker(Utility(d1.copy()))(((0, 1),), {})
    u1, u2 = DataUtility(Dataset(d1, d1)), DataUtility(Dataset(d2, d1))
    assert KeyMaker(u1)(((0,),), {}) != KeyMaker(u2)(((0,),), {})
    assert function_identity(u1) == function_identity(DataUtility(Dataset(d1.copy(), d1.copy())))


class StatefulCallable:
    def __init__(self) -> None:
        self.model = threading.Lock()

    def __call__(self, x: Any) -> Any:
        return x


def test_callable_without_canonical_state_needs_cache_key_or_signature() -> None:
    with pytest.raises(KeyEncodingError, match=r"__cache_key__\(\).*signature="):
        function_identity(StatefulCallable())
    km = KeyMaker(StatefulCallable(), signature=b"my-model-v1")
    assert km((1,), {}) == KeyMaker(StatefulCallable(), signature=b"my-model-v1")((1,), {})
    assert km((1,), {}) != KeyMaker(StatefulCallable(), signature=b"my-model-v2")((1,), {})


def test_unencodable_closure_names_the_variable() -> None:
    lock = threading.Lock()  # known not to affect results: keyed by its type
    opaque = Opaque(1)

    def f(x: Any) -> Any:
        with lock:
            return x

    def g(x: Any) -> Any:
        return opaque.v + x

    assert len(function_identity(f)) == 16
    with pytest.raises(KeyEncodingError, match=r"in closure variable opaque of .*g\(\).*signature="):
        function_identity(g)


class Model:
    def __init__(self, w: float) -> None:
        self.w = w

    def predict(self, x: float) -> float:
        return self.w * x

    def __cache_key__(self) -> float:
        return self.w


def test_partials_and_bound_methods() -> None:
    base = _make_defaulted(1)
    assert function_identity(functools.partial(base, k=2)) != function_identity(
        functools.partial(base, k=3)
    )
    assert function_identity(functools.partial(base, 2)) == function_identity(
        functools.partial(base, 2)
    )
    assert function_identity(Model(1.0).predict) != function_identity(Model(2.0).predict)
    assert function_identity(Model(1.0).predict) == function_identity(Model(1.0).predict)


def test_recursion_and_mutual_recursion_terminate() -> None:
    src = (
        "def even(n):\n    return n == 0 or odd(n - 1)\n\n"
        "def odd(n):\n    return n != 0 and even(n - 1)\n"
    )
    assert function_identity(exec_fn(src, "even")) != function_identity(exec_fn(src, "odd"))
    fact = exec_fn("def f(n):\n    return 1 if n == 0 else n * f(n - 1)\n")
    assert len(function_identity(fact)) == 16


def test_globals_without_encoding_do_not_block_identity() -> None:
    src = "def f(x):\n    LOG.info('x')\n    return np.mean(x) + len(x)\n"
    f = exec_fn(src, LOG=logging.getLogger("expcache.test"), np=np)
    assert len(function_identity(f)) == 16


def test_decorated_globals_are_keyed_by_what_they_wrap() -> None:
    class Wrapper:  # like expcache.Memoized: functools.update_wrapper + runtime state
        def __init__(self, fn: Any) -> None:
            functools.update_wrapper(self, fn)
            self.lock = threading.Lock()

        def __call__(self, *a: Any) -> Any:
            return self.__wrapped__(*a)  # type: ignore[attr-defined]

    src = "def g(x):\n    return x + {c}\n\ndef f(x):\n    return G(x)\n"
    ids = {
        function_identity(exec_fn(src.format(c=c), G=Wrapper(exec_fn(src.format(c=c), "g"))))
        for c in (1, 2)
    }
    assert len(ids) == 2


def test_identity_is_taken_on_first_use_so_later_definitions_count() -> None:
    src = "def f(x):\n    return helper(x) * SCALE\n"
    keys = []
    for c in (1, 2):
        ns: dict[str, Any] = {"__name__": "generated"}
        exec(src, ns)
        km = KeyMaker(ns["f"])  # like a decorator: helper and SCALE do not exist yet
        exec(f"def helper(x):\n    return x + {c}\nSCALE = 3\n", ns)
        keys.append(km((1,), {}))
    assert keys[0] != keys[1]


def test_signature_replaces_and_version_salts_identity() -> None:
    f, g = _make_scaler(2), _make_scaler(3)
    assert KeyMaker(f, signature=b"s").identity == KeyMaker(g, signature=b"s").identity
    assert KeyMaker(f).identity != KeyMaker(f, version="1").identity
    assert KeyMaker(f, version="1").identity != KeyMaker(f, version="2").identity
    assert len(KeyMaker(f).identity) == 16
    with pytest.raises(ConfigError, match="signature"):
        KeyMaker(f, signature="text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="version"):
        KeyMaker(f, version=3)  # type: ignore[arg-type]


def test_functions_as_arguments_are_keyed_by_code() -> None:
    km = KeyMaker(lambda loss, x: loss(x))
    assert km((lambda v: v + 1, 1), {}) != km((lambda v: v + 2, 1), {})
    assert km((np.mean, 1), {}) != km((np.median, 1), {})
    assert km((len, 1), {}) == km((len, 1), {})


# ------------------------------------------------------------------------------ binding
def f_abc(a: Any, b: Any = 2, c: Any = None) -> Any:
    return a


def test_argument_spellings_give_one_key() -> None:
    km = KeyMaker(f_abc)
    spellings = [((1,), {"b": 2}), ((), {"a": 1, "b": 2}), ((), {"b": 2, "a": 1}), ((1,), {})]
    assert len({km(a, k) for a, k in spellings}) == 1
    assert km((1, 2, None), {}) == km((1,), {})
    assert km((1, 3), {}) != km((1,), {})
    assert km((1,), {"c": 0}) != km((1,), {})


def f_one(x: Any) -> Any:
    return x


class Small(enum.IntEnum):
    ONE = 1


_NAN_PAYLOAD = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\xff")[0]


@pytest.mark.parametrize(
    "value",
    [0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**200, True, Small.ONE, np.int64(3),
     0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), _NAN_PAYLOAD, np.float64(2.5),
     "", "héllo", "\ud800x", np.str_("s")],
    ids=repr,
)
def test_inlined_scalars_write_the_bytes_of_encode(value: Any) -> None:
    # KeyMaker writes float, int and str arguments itself (no encoder call on the hit path):
    # the key must be the one the generic encoder gives, positionally and by keyword.
    km = KeyMaker(f_one)
    out: list[bytes] = []
    encode(value, out, Ctx(False))
    stream = km.identity + tags.ARG + s("x") + b"".join(out)
    expected = km.prefix + xxhash.xxh3_128_hexdigest(stream)
    assert km((value,), {}) == expected
    assert km((), {"x": value}) == expected
    assert km.many([((value,), {}), ((), {"x": value})]) == [expected, expected]


def test_many_keys_like_one_call_at_a_time() -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, 2.5, "s"), {}), ((1,), {}), ((1, 2), {"c": "x"}), ((True, None, [1]), {}),
        ((2**70, float("nan"), "\ud800"), {}), ((np.float64(1.0), 1, 1), {}), ((), {"a": 1}),
    ]
    for km in (KeyMaker(f_abc), KeyMaker(f_abc, ignore_args=["b"]),
               KeyMaker(f_abc, pickle_args="warn")):
        assert km.many(calls) == [km(a, k) for a, k in calls]
    varargs = [((1, 2, 3), {}), ((1,), {"x": 1}), ((1,), {})]
    kv = KeyMaker(f_var)
    assert kv.many(varargs) == [kv(a, k) for a, k in varargs]
    with pytest.raises(KeyEncodingError, match="argument 'a' of f_abc"):
        KeyMaker(f_abc).many([((1,), {}), ((threading.Lock(),), {})])


def f_var(a: Any, *rest: Any, flag: bool = False, **opts: Any) -> Any:
    return a


def test_varargs_and_varkw() -> None:
    km = KeyMaker(f_var)
    assert km((1, 2, 3), {"x": 1, "y": 2}) == km((1, 2, 3), {"y": 2, "x": 1})
    assert km((1, 2, 3), {}) != km((1, 3, 2), {})
    assert km((1,), {"flag": False}) == km((1,), {})
    assert km((1,), {"x": 1}) != km((1,), {"x": 2})
    assert km((1, 2), {}) != km((1,), {"rest": 2})


def test_ignore_args_positional_and_keyword() -> None:
    km = KeyMaker(f_abc, ignore_args=["b"])
    assert km((1, 5), {}) == km((1,), {"b": 7}) == km((1,), {})
    assert km((1, 5), {}) != km((2, 5), {})
    assert KeyMaker(f_abc, ignore_args="c")((1, 2, 3), {}) == KeyMaker(f_abc, ignore_args="c")(
        (1,), {}
    )
    # Names that can only reach **opts are dropped from it.
    kv = KeyMaker(f_var, ignore_args=["verbose", "rest"])
    assert kv((1, 2), {"verbose": True, "x": 1}) == kv((1,), {"x": 1})
    assert kv((1,), {"x": 1}) != kv((1,), {"x": 2})


def test_ignore_args_names_the_function_does_not_have_are_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The seed (and pyDVL 0.7) accepted them; a ConfigError here broke migrating code.
    with caplog.at_level(logging.DEBUG, logger="expcache"):
        km = KeyMaker(f_abc, ignore_args=["zzz", "a", "nope"])
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "'nope'" in caplog.records[0].getMessage()
    assert km((1,), {}) == km((2,), {})  # 'a' itself is ignored
    # Without **kwargs, an ignored unknown keyword is left for the function to reject.
    assert km((1,), {"zzz": 1}) == km((1,), {})


def test_bad_calls_raise_type_error() -> None:
    km = KeyMaker(f_abc)
    with pytest.raises(TypeError, match="missing"):
        km((), {})
    with pytest.raises(TypeError, match="unexpected keyword"):
        km((1,), {"d": 1})
    with pytest.raises(TypeError, match="multiple values"):
        km((1,), {"a": 1})
    with pytest.raises(TypeError, match="positional"):
        km((1, 2, 3, 4), {})


def test_unencodable_argument_error_names_the_parameter(tmp_path: Path) -> None:
    km = KeyMaker(f_abc)
    with open(tmp_path / "f.txt", "w") as fh, pytest.raises(KeyEncodingError) as err:
        km((fh,), {})
    assert "argument 'a' of f_abc()" in str(err.value)
    assert "TextIOWrapper" in str(err.value)
    with pytest.raises(KeyEncodingError, match=r"_thread\.lock object at c\['x'\]\[1\]"):
        km((1,), {"c": {"x": [0, threading.Lock()]}})
    with pytest.raises(KeyEncodingError, match="'rest'"):
        KeyMaker(f_var)((1, threading.Lock()), {})


class Opaque:
    def __init__(self, v: int) -> None:
        self.v = v


def test_pickle_args() -> None:
    with pytest.raises(KeyEncodingError) as err:
        KeyMaker(f_abc)((Opaque(1),), {})
    message = str(err.value)
    for fix in ("pickle_args=True", "__cache_key__()", "expcache.register_encoder", "ignore_args"):
        assert fix in message
    assert "pickle_fallback" not in message  # the seed's hint named an option that never existed
    km = KeyMaker(f_abc, pickle_args=True)
    assert km((Opaque(1),), {}) == km((Opaque(1),), {})
    assert km((Opaque(1),), {}) != km((Opaque(2),), {})
    assert km((1,), {}) == KeyMaker(f_abc)((1,), {})  # canonical values are unaffected
    with pytest.raises(KeyEncodingError, match="cannot be pickled"):
        km((threading.Lock(),), {})


def test_stateless_objects_key_by_class() -> None:
    class Strategy:
        def pick(self, x: Any) -> Any:
            return x

    class Other(Strategy):
        pass

    assert fp(Strategy()) == fp(Strategy())
    assert fp(Strategy()) != fp(Other())
    sentinel = object()
    assert fp(sentinel) == fp(object())


# ------------------------------------------------------------------------------ key format
SAFE_KEY = re.compile(rb"^(?:[A-Za-z0-9_.\-]{1,64}:)?ex3:[0-9a-f]{12}:[0-9a-f]{32}$")


@pytest.mark.parametrize("namespace", ["", "a", "proj.sub-1_x", "n" * 64])
def test_keys_are_memcached_safe(namespace: str) -> None:
    key = KeyMaker(f_abc, namespace=namespace)((["ünï", "  \n"],), {"c": {"é": b"\x00"}})
    raw = key.encode("ascii")
    assert SAFE_KEY.match(raw)
    assert len(raw) <= 200
    assert not re.search(rb"[\x00-\x20\x7f]", raw)
    assert key.startswith(f"{namespace}:ex{KEY_FORMAT_VERSION}:" if namespace else "ex3:")


@pytest.mark.parametrize("namespace", ["a b", "a:b", "n" * 65, "é", "x\n", 3])
def test_namespace_validation(namespace: Any) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        KeyMaker(f_abc, namespace=namespace)


def test_digest_matches_key_and_is_16_bytes() -> None:
    km = KeyMaker(f_abc, namespace="ns")
    assert len(km.digest((1,), {})) == 16
    assert km((1,), {}) == f"ns:ex{KEY_FORMAT_VERSION}:{km.tag}:{km.digest((1,), {}).hex()}"
    assert len(fingerprint(1)) == 16
    assert len(function_identity(f_abc)) == 16
