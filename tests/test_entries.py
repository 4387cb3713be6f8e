"""Typed entries: Meta, the moments payload and the value payload, checked on decode."""

from __future__ import annotations

import dataclasses
import math
import pickle
import struct
from typing import Any

import numpy as np
import pytest

from expcache import Moments, SerdeError
from expcache.entries import (
    ALIGN,
    FORM_BUFFERS,
    FORM_FLOAT,
    OOB_MIN,
    Meta,
    MomentsEntry,
    ValueEntry,
    check_meta,
    check_moments,
    decode_moments,
    decode_value,
    encode_moments,
    encode_value,
    kind_of,
    make_meta,
    split_buffers,
)

META = Meta(function="pkg.mod.utility", created=1.7e9, seconds=0.25, identity=b"i" * 16, args=b"a")


def joined(parts: list[Any]) -> bytes:
    return b"".join(parts)


# -- Meta and the entry types --------------------------------------------------------------------
def test_meta_is_a_frozen_slotted_record() -> None:
    meta = Meta()
    assert (meta.function, meta.created, meta.seconds, meta.identity, meta.args) == (
        "", 0.0, 0.0, b"", b""
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.seconds = 1.0  # type: ignore[misc]
    assert not hasattr(meta, "__dict__")


def test_make_meta_builds_an_ordinary_meta() -> None:
    built = make_meta(*dataclasses.astuple(META))
    assert type(built) is Meta
    assert built == META and hash(built) == hash(META) and repr(built) == repr(META)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.function = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(built)) == META
    assert dataclasses.replace(built, seconds=1.0).seconds == 1.0


def test_entries_are_named_tuples_with_a_kind() -> None:
    value = ValueEntry({"a": 1}, META)
    moments = MomentsEntry(Moments(2, 1.0, 0.5), META)
    assert value.value == {"a": 1} and value.meta is META
    assert moments.moments.n == 2 and moments.meta is META
    assert kind_of(value) == "value" and kind_of(moments) == "moments"
    for other in [("v", 1, 0.0), (1.0, META), None]:
        with pytest.raises(SerdeError, match="not a cache entry"):
            kind_of(other)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("function", 12),
        ("function", "\udcff"),  # a lone surrogate has no utf-8 encoding
        ("function", "x" * 5000),
        ("created", math.nan),
        ("created", "now"),
        ("created", True),
        ("seconds", -1.0),
        ("seconds", math.inf),
        ("identity", b"short"),
        ("identity", "i" * 16),
        ("args", b"a" * 5000),
        ("args", bytearray(b"a")),
    ],
)
def test_meta_that_cannot_be_stored_is_refused(field: str, bad: Any) -> None:
    with pytest.raises(SerdeError, match=f"Meta.{field}"):
        check_meta(dataclasses.replace(META, **{field: bad}))


def test_check_meta_returns_the_header_fields() -> None:
    assert check_meta(META) == (b"pkg.mod.utility", 1.7e9, 0.25, b"i" * 16, b"a")
    with pytest.raises(SerdeError, match="must be a Meta"):
        check_meta(("pkg", 0.0, 0.0, b"", b""))


# -- moments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "moments",
    [
        Moments(1, 0.5, 0.0),
        Moments(800, -2.0, 1234.5),
        Moments(3, np.float64(1.5), np.float64(0.25)),  # numpy scalars are floats
        Moments(2, np.arange(6.0).reshape(2, 3), np.ones((2, 3))),
        Moments(2, np.asarray(1.0), np.asarray(0.0)),  # 0-d
        Moments(5, np.zeros(0), np.zeros(0)),
        Moments(2, np.arange(8.0).reshape(2, 4)[:, ::2], np.ones((2, 4))[:, ::2]),  # strided
    ],
    ids=["one", "float", "np_scalar", "2d", "0d", "empty", "strided"],
)
def test_moments_round_trip_exactly(moments: Moments) -> None:
    back = decode_moments(joined(encode_moments(moments)))
    assert back.n == moments.n
    np.testing.assert_array_equal(back.mean, moments.mean)
    np.testing.assert_array_equal(back.m2, moments.m2)
    if isinstance(moments.mean, np.ndarray):
        assert back.mean.dtype == np.float64 and back.mean.shape == moments.mean.shape
        assert back.mean.flags.writeable and back.mean.flags.aligned
    else:
        assert type(back.mean) is float and type(back.m2) is float


def test_decoded_moments_arrays_are_independent_of_the_buffer() -> None:
    data = bytearray(joined(encode_moments(Moments(2, np.ones(4), np.zeros(4)))))
    back = decode_moments(data)
    data[-1] ^= 0xFF
    back.mean[0] = 7.0  # the caller owns it
    assert back.m2[-1] == 0.0


def test_rounding_below_zero_in_m2_is_stored_as_zero() -> None:
    assert decode_moments(joined(encode_moments(Moments(2, 1.0, -1e-18)))).m2 == 0.0
    back = decode_moments(joined(encode_moments(Moments(2, np.ones(2), np.array([0.5, -1e-18])))))
    np.testing.assert_array_equal(back.m2, [0.5, 0.0])


@pytest.mark.parametrize(
    "moments",
    [
        Moments(0, 1.0, 0.0),
        Moments(-1, 1.0, 0.0),
        Moments(True, 1.0, 0.0),
        Moments(2.0, 1.0, 0.0),  # type: ignore[arg-type]
        Moments(2, "a", 0.0),
        Moments(2, None, None),
        Moments(2, 1, 0),  # ints are not what the policy folds
        Moments(2, math.nan, 0.0),
        Moments(2, math.inf, 0.0),
        Moments(2, 1.0, math.nan),
        Moments(2, 1.0, -1.0),
        Moments(2, 1.0, np.zeros(2)),
        Moments(2, np.ones(2), 0.0),
        Moments(2, np.ones(2), np.ones(3)),
        Moments(2, np.ones(2, dtype=np.float32), np.ones(2, dtype=np.float32)),
        Moments(2, np.array([1.0, math.nan]), np.ones(2)),
        Moments(2, np.ones(2), np.array([1.0, -1.0])),
        Moments(2, np.array(["a", "b"]), np.ones(2)),
    ],
)
def test_invalid_moments_are_serde_errors(moments: Moments) -> None:
    with pytest.raises(SerdeError, match="moments"):
        check_moments(moments)


@pytest.mark.parametrize("layout", [("v",), ("v", 1, None), ("m", 3, -1.5, 0.25, 0.0), None])
def test_something_else_is_not_moments(layout: Any) -> None:
    with pytest.raises(SerdeError, match="must be a Moments"):
        check_moments(layout)


def test_invalid_moments_are_not_encoded() -> None:
    for bad in [Moments(0, 1.0, 0.0), Moments(2, math.nan, 0.0), Moments(2, 1.0, -math.inf)]:
        with pytest.raises(SerdeError):
            encode_moments(bad)


def _moments_payload(n: int, form: int, ndim: int, shape: tuple[int, ...], data: bytes) -> bytes:
    return struct.pack("<qBB6x", n, form, ndim) + struct.pack(f"<{len(shape)}Q", *shape) + data


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        _moments_payload(-1, 0, 0, (), struct.pack("<dd", 1.0, 0.0)),
        _moments_payload(0, 0, 0, (), struct.pack("<dd", 1.0, 0.0)),
        _moments_payload(2, 0, 0, (), struct.pack("<dd", math.nan, 0.0)),
        _moments_payload(2, 0, 0, (), struct.pack("<dd", 1.0, -2.0)),
        _moments_payload(2, 0, 0, (), struct.pack("<d", 1.0)),
        _moments_payload(2, 0, 1, (), struct.pack("<dd", 1.0, 0.0)),
        _moments_payload(2, 2, 0, (), struct.pack("<dd", 1.0, 0.0)),
        _moments_payload(2, 1, 33, (1,) * 33, struct.pack("<dd", 1.0, 0.0)),
        _moments_payload(2, 1, 1, (2,), struct.pack("<3d", 1.0, 1.0, 0.0)),
        _moments_payload(2, 1, 2, (2**40, 2**40), b""),  # a forged shape allocates nothing
        _moments_payload(2, 1, 3, (1,), b""),  # shape shorter than ndim
        _moments_payload(2, 1, 1, (1,), struct.pack("<dd", 1.0, math.inf)),
        struct.pack("<qBB6x", 2, 0, 0)[:-1] + b"\x01" + struct.pack("<dd", 1.0, 0.0),  # reserved
    ],
    ids=[
        "empty", "n_negative", "n_zero", "nan_mean", "negative_m2", "short", "float_ndim",
        "unknown_form", "ndim", "wrong_size", "huge_shape", "short_shape", "inf_m2", "reserved",
    ],
)
def test_malformed_moments_payloads_are_serde_errors(payload: bytes) -> None:
    with pytest.raises(SerdeError, match="moments"):
        decode_moments(payload)


def test_every_truncation_of_a_moments_payload_is_refused() -> None:
    data = joined(encode_moments(Moments(3, np.arange(3.0), np.ones(3))))
    for end in range(len(data)):
        with pytest.raises(SerdeError):
            decode_moments(data[:end])


# -- values ----------------------------------------------------------------------------------------
def test_a_float_is_its_eight_bytes() -> None:
    form, parts = encode_value(0.8596, 0)
    assert form == FORM_FLOAT and joined(parts) == struct.pack("<d", 0.8596)
    assert decode_value(form, memoryview(joined(parts)), False) == 0.8596
    # numpy scalars and float subclasses keep their type through pickle
    form, parts = encode_value(np.float64(0.5), 0)
    assert form == 0 and type(decode_value(form, memoryview(joined(parts)), False)) is np.float64


@pytest.mark.parametrize("start", [0, 1, 37, 100])
def test_large_buffers_go_out_of_band_aligned(start: int) -> None:
    big = np.arange(OOB_MIN // 8 * 2, dtype=np.float64)
    value = {"big": big, "also": big[::-1].copy(), "small": np.ones(3)}
    form, parts = encode_value(value, start)
    assert form == FORM_BUFFERS
    data = bytearray(start) + joined(parts)
    body = memoryview(data)[start:]
    _, buffers = split_buffers(body, True)
    assert [len(b) for b in buffers] == [big.nbytes, big.nbytes]
    for buffer in buffers:  # aligned where it lands in the envelope
        offset = np.frombuffer(buffer, np.uint8).ctypes.data - np.frombuffer(data, np.uint8).ctypes.data
        assert offset % ALIGN == 0
    back = decode_value(form, body, True)
    np.testing.assert_array_equal(back["big"], big)
    np.testing.assert_array_equal(back["also"], big[::-1])
    assert np.shares_memory(back["big"], np.frombuffer(data, np.uint8))  # a view, no copy


def test_buffers_from_immutable_bytes_are_writable_copies() -> None:
    big = np.arange(OOB_MIN, dtype=np.float64)
    data = joined(encode_value(big, 0)[1])
    back = decode_value(FORM_BUFFERS, memoryview(data), False)
    assert back.flags.writeable and not np.shares_memory(back, np.frombuffer(data, np.uint8))
    back[0] = -1.0
    np.testing.assert_array_equal(decode_value(FORM_BUFFERS, memoryview(data), False), big)


def test_read_only_arrays_stay_read_only() -> None:
    big = np.arange(OOB_MIN, dtype=np.float64)
    big.flags.writeable = False
    back = decode_value(FORM_BUFFERS, memoryview(joined(encode_value(big, 0)[1])), False)
    assert not back.flags.writeable
    np.testing.assert_array_equal(back, big)


def test_non_contiguous_and_fortran_arrays_round_trip() -> None:
    fortran = np.asfortranarray(np.arange(OOB_MIN, dtype=np.float64).reshape(64, -1))
    strided = np.arange(OOB_MIN, dtype=np.float64)[::3]
    form, parts = encode_value([fortran, strided], 0)
    back = decode_value(form, memoryview(joined(parts)), False)
    np.testing.assert_array_equal(back[0], fortran)
    assert back[0].flags.f_contiguous
    np.testing.assert_array_equal(back[1], strided)


def test_unpicklable_values_are_serde_errors() -> None:
    with pytest.raises(SerdeError, match="cannot be pickled"):
        encode_value(lambda: 1, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        struct.pack("<IIQ", 1, 1, 0) + struct.pack("<QQ", 32, 0),  # reserved
        struct.pack("<IIQ", 2**20, 0, 0),  # count
        struct.pack("<IIQ", 1, 0, 10**9) + struct.pack("<QQ", 32, 0),  # pickle too long
        struct.pack("<IIQ", 1, 0, 0) + struct.pack("<QQ", 10, 0),  # buffer over the table
        struct.pack("<IIQ", 1, 0, 0) + struct.pack("<QQ", 32, 10**12),  # past the end
        struct.pack("<IIQ", 1, 0, 0) + struct.pack("<QQ", 32, 0) + b"x",  # trailing bytes
        struct.pack("<IIQ", 1, 0, 0) + struct.pack("<QQ", 200, 0) + bytes(200),  # gap
    ],
    ids=["empty", "reserved", "count", "pickle", "overlap", "past_end", "trailing", "gap"],
)
def test_malformed_buffer_tables_are_serde_errors(body: bytes) -> None:
    with pytest.raises(SerdeError):
        split_buffers(memoryview(body), False)
