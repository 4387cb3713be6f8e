"""Issue 17: large arrays are not copied again on load, and always come back writable.

From a writable buffer (what a backend assembles chunks into) the arrays are views of it;
from immutable ``bytes`` each array is copied once, because an array over ``bytes`` would be
read-only and callers mutate the results they get.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from expcache.entries import Meta, ValueEntry
from expcache.serde import Serde

KEY = "ex3:0123456789ab:0123456789abcdef0123456789abcdef"
META = Meta(function="pkg.utility", created=1.7e9, seconds=2.0, identity=b"\x05" * 16)


def as_bytes(buffer: Any) -> np.ndarray[Any, Any]:
    return np.frombuffer(buffer, np.uint8)


@pytest.fixture(params=[None, b"b" * 32], ids=["unsigned", "signed"])
def serde(request: pytest.FixtureRequest) -> Serde:
    return Serde(request.param)


def big(n: int = 200_000, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random(n)


@pytest.mark.parametrize("wrap", [bytearray, lambda d: memoryview(bytearray(d))], ids=["bytearray", "memoryview"])
def test_arrays_from_a_writable_buffer_are_views_of_it(serde: Serde, wrap: Any) -> None:
    value = {"a": big(), "b": big(seed=1).reshape(400, 500), "small": np.ones(3), "n": 7}
    buffer = wrap(serde.dumps(KEY, ValueEntry(value, META)))
    back = serde.loads(KEY, buffer).value  # type: ignore[union-attr]
    for name in ("a", "b"):
        np.testing.assert_array_equal(back[name], value[name])
        assert np.shares_memory(back[name], as_bytes(buffer))  # not copied
        assert back[name].flags.writeable and back[name].flags.aligned
    assert back["b"].shape == (400, 500) and back["n"] == 7
    back["a"][0] = -1.0  # the buffer was handed over: the result owns it now
    assert back["a"][0] == -1.0


def test_arrays_from_immutable_bytes_are_writable_copies(serde: Serde) -> None:
    value = big()
    data = serde.dumps(KEY, ValueEntry(value, META))
    first = serde.loads(KEY, data).value  # type: ignore[union-attr]
    assert first.flags.writeable and first.flags.aligned
    assert not np.shares_memory(first, as_bytes(data))
    first[:] = 0.0
    np.testing.assert_array_equal(serde.loads(KEY, data).value, value)  # type: ignore[union-attr]


def test_compressed_arrays_come_back_writable_and_aligned(serde: Serde) -> None:
    value = np.zeros((300, 700))
    data = serde.dumps(KEY, ValueEntry(value, META))
    assert data[3] & 1  # compressed
    for source in (data, bytearray(data)):
        back = serde.loads(KEY, source).value  # type: ignore[union-attr]
        np.testing.assert_array_equal(back, value)
        assert back.flags.writeable and back.flags.aligned and back.flags.c_contiguous


@pytest.mark.parametrize(
    "value",
    [
        np.arange(100_000, dtype=np.float32),
        np.arange(100_000, dtype=np.int64).reshape(100, 1000).T,  # Fortran order
        np.arange(100_000, dtype=np.complex128),
        np.zeros(50_000, dtype=[("x", "<f8"), ("y", "<i4")]),
        np.arange(200_000.0)[::2],  # not contiguous: in the stream
        np.array([{"a": 1}, None] * 10_000, dtype=object),
        [big(50_000, seed=i) for i in range(5)],
    ],
    ids=["float32", "fortran", "complex", "structured", "strided", "object", "list"],
)
def test_array_kinds_round_trip(serde: Serde, value: Any) -> None:
    data = serde.dumps(KEY, ValueEntry(value, META))
    for source in (data, bytearray(data)):
        back = serde.loads(KEY, source).value  # type: ignore[union-attr]
        if isinstance(value, list):
            for got, want in zip(back, value, strict=True):
                np.testing.assert_array_equal(got, want)
        else:
            assert back.dtype == value.dtype and back.shape == value.shape
            np.testing.assert_array_equal(back, value)
            assert back.flags.writeable


def test_the_store_side_does_not_copy_into_the_pickle(serde: Serde) -> None:
    """The array's bytes appear once in the envelope, after a small pickle stream."""
    value = big()
    data = serde.dumps(KEY, ValueEntry(value, META))
    assert len(data) < value.nbytes + 1024
    assert data.count(value[:64].tobytes()) == 1
