"""Issue 13: a custom payload codec (pymemcache's serde protocol) inside the verified envelope."""

from __future__ import annotations

import json
import pathlib
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymemcache.serde import PickleSerde

from expcache import Moments, SerdeError, SignatureError
from expcache.entries import Meta, MomentsEntry, ValueEntry
from expcache.serde import Serde

KEY = "ex3:0123456789ab:0123456789abcdef0123456789abcdef"
SECRET = b"c" * 32
META = Meta(function="pkg.utility", created=1.7e9, seconds=0.5, identity=b"\x07" * 16)


def codec_flags(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 12)[0])


class JsonCodec:
    """A JSON-ish codec as a migrating user writes it: bytes raw (flags 0), the rest JSON (1)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.loaded = 0

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        self.keys.append(key)
        if isinstance(value, bytes):
            return value, 0
        return json.dumps(value).encode(), 1

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        self.keys.append(key)
        self.loaded += 1
        if flags == 0:
            return value
        if flags == 1:
            return json.loads(value)
        raise ValueError(f"unknown flags {flags}")


@pytest.mark.parametrize(
    ("value", "flags"),
    [(b"raw bytes", 0), ("text", 16), (42, 2), ({"a": [1, 2.5]}, 1), (np.arange(3.0), 1)],
    ids=["bytes", "str", "int", "dict", "array"],
)
@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_pymemcache_pickle_serde_round_trips_with_its_flags(
    value: Any, flags: int, secret: bytes | None
) -> None:
    serde = Serde(secret, codec=PickleSerde(pickle_version=4))
    data = serde.dumps(KEY, ValueEntry(value, META))
    assert data[3] & 4 and codec_flags(data) == flags  # the codec's flags travel in the header
    back = serde.loads(KEY, data)
    assert isinstance(back, ValueEntry) and back.meta == META
    assert type(back.value) is type(value)
    np.testing.assert_array_equal(back.value, value)


def test_a_json_codec_gets_our_key_and_round_trips() -> None:
    codec = JsonCodec()
    serde = Serde(codec=codec)
    for value in ({"scores": [0.5, 0.25]}, b"\x00\xff", [1, "two", None]):
        assert serde.loads(KEY, serde.dumps(KEY, ValueEntry(value, META))).value == value  # type: ignore[union-attr]
    assert set(codec.keys) == {KEY}


def test_moments_never_go_through_the_codec() -> None:
    codec = JsonCodec()
    serde = Serde(codec=codec)
    entry = MomentsEntry(Moments(3, np.ones(2), np.zeros(2)), META)
    back = serde.loads(KEY, serde.dumps(KEY, entry))
    assert isinstance(back, MomentsEntry) and back.moments.n == 3
    assert codec.keys == []


def test_large_codec_payloads_are_compressed_inside_the_envelope() -> None:
    serde = Serde(codec=JsonCodec())
    value = {"zeros": [0] * 100_000}
    data = serde.dumps(KEY, ValueEntry(value, META))
    assert data[3] & 1 and len(data) < 10_000
    assert serde.loads(KEY, data).value == value  # type: ignore[union-attr]


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_codec_entries_are_verified_before_the_codec_runs(secret: bytes | None) -> None:
    codec = JsonCodec()
    serde = Serde(secret, codec=codec)
    data = serde.dumps(KEY, ValueEntry({"a": 1}, META))
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        with pytest.raises(SerdeError):
            serde.loads(KEY, bytes(damaged))
    assert codec.loaded == 0  # never handed a byte that was not verified


def test_signed_codec_readers_reject_foreign_entries_unread() -> None:
    codec = JsonCodec()
    reader = Serde(SECRET, codec=codec)
    for forged in (
        Serde(codec=JsonCodec()).dumps(KEY, ValueEntry({"a": 1}, META)),
        Serde(b"o" * 32, codec=JsonCodec()).dumps(KEY, ValueEntry({"a": 1}, META)),
    ):
        with pytest.raises(SignatureError):
            reader.loads(KEY, forged)
    assert codec.loaded == 0


class Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)


def test_a_codec_reader_never_unpickles_a_default_entry(tmp_path: Path) -> None:
    """A codec is often chosen to stay away from pickle: a pickle entry is refused unread."""
    marker = tmp_path / "pwned"
    data = Serde().dumps(KEY, ValueEntry(Touch(marker), META))
    with pytest.raises(SerdeError, match="custom codec"):
        Serde(codec=JsonCodec()).loads(KEY, data)
    assert not marker.exists()


def test_a_default_reader_refuses_codec_entries() -> None:
    data = Serde(codec=JsonCodec()).dumps(KEY, ValueEntry({"a": 1}, META))
    with pytest.raises(SerdeError, match="custom codec"):
        Serde().loads(KEY, data)


class Failing:
    def __init__(self, dump: Any = None, load: BaseException | None = None) -> None:
        self.dump, self.load = dump, load

    def serialize(self, key: str, value: Any) -> Any:
        if isinstance(self.dump, BaseException):
            raise self.dump
        return self.dump if self.dump is not None else (b"ok", 1)

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        if self.load is not None:
            raise self.load
        return value


@pytest.mark.parametrize(
    "load", [ValueError("bad"), KeyError("k"), ZeroDivisionError(), pickle.UnpicklingError()]
)
def test_a_codec_that_raises_on_load_is_a_serde_error(load: BaseException) -> None:
    data = Serde(codec=Failing()).dumps(KEY, ValueEntry(1, META))
    with pytest.raises(SerdeError, match="codec failed"):
        Serde(codec=Failing(load=load)).loads(KEY, data)


@pytest.mark.parametrize(
    "dump",
    [
        TypeError("cannot"),
        (12, 1),  # not bytes
        (b"x", -1),
        (b"x", 2**32),
        (b"x", True),
        (b"x", "1"),
        b"no flags",
        ("a", "b", "c"),
    ],
    ids=["raises", "not_bytes", "negative", "wide", "bool", "str_flags", "no_tuple", "triple"],
)
def test_a_codec_that_fails_on_dump_is_a_serde_error(dump: Any) -> None:
    with pytest.raises(SerdeError):
        Serde(codec=Failing(dump=dump)).dumps(KEY, ValueEntry(1, META))


def test_a_str_payload_is_encoded_like_pymemcache_does() -> None:
    data = Serde(codec=Failing(dump=("héllo", 16))).dumps(KEY, ValueEntry(1, META))
    assert Serde(codec=Failing()).loads(KEY, data).value == "héllo".encode()  # type: ignore[union-attr]


def test_a_serde_with_a_codec_pickles() -> None:
    serde = pickle.loads(pickle.dumps(Serde(SECRET, codec=PickleSerde())))
    assert isinstance(serde.codec, PickleSerde)
    assert serde.loads(KEY, serde.dumps(KEY, ValueEntry("v", META))).value == "v"
