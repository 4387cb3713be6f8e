"""The value envelope: everything is verified before a single byte is unpickled."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache import ConfigError, Moments, SerdeError, SignatureError, ValueTooLarge
from expcache.entries import Entry, Meta, MomentsEntry, ValueEntry
from expcache.serde import (
    DEFAULT_MAX_SIZE,
    ENV_SIGNING_KEY,
    FORMAT_VERSION,
    MAGIC,
    Serde,
    signing_key_from_env,
)

KEY = "ex3:0123456789ab:0123456789abcdef0123456789abcdef"
SECRET = b"s" * 32
META = Meta(function="pkg.mod.utility", created=1.7e9, seconds=0.25, identity=b"i" * 16,
            args=b"per-argument digests")


class Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)


def same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else bool(a == b)


ENTRIES = {
    "float": ValueEntry(0.8596, META),
    "none": ValueEntry(None, Meta()),
    "dict": ValueEntry({"a": [1, 2.5], "b": "text"}, META),
    "layout_lookalike": ValueEntry(("v", 1, None), META),  # any value is just a value
    "np_float": ValueEntry(np.float64(0.5), META),
    "array": ValueEntry(np.arange(100_000, dtype=np.float64), META),
    "moments": MomentsEntry(Moments(3, -1.5, 0.25), META),
    "moments_array": MomentsEntry(Moments(3, np.ones((2, 3)), np.zeros((2, 3))), META),
}


def assert_same_entry(back: Entry, entry: Entry) -> None:
    assert type(back) is type(entry)
    assert back.meta == entry.meta
    if isinstance(entry, MomentsEntry):
        assert isinstance(back, MomentsEntry)
        assert back.moments.n == entry.moments.n
        assert same(back.moments.mean, entry.moments.mean)
        assert same(back.moments.m2, entry.moments.m2)
    else:
        assert type(back[0]) is type(entry[0]) and same(back[0], entry[0])


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
@pytest.mark.parametrize("name", list(ENTRIES))
@pytest.mark.parametrize("container", [bytes, bytearray, memoryview])
def test_round_trip(secret: bytes | None, name: str, container: type) -> None:
    serde = Serde(secret)
    entry = ENTRIES[name]
    data = serde.dumps(KEY, entry)
    assert type(data) is bytes and data[:2] == MAGIC and data[2] == FORMAT_VERSION
    assert_same_entry(serde.loads(KEY, container(data)), entry)
    kind, meta, size = serde.read_meta(KEY, container(data))
    assert (kind, meta) == ("moments" if name.startswith("moments") else "value", entry.meta)
    assert size > 0
    assert serde.verify(KEY, container(data)) is None


def test_large_compressible_values_are_compressed() -> None:
    serde = Serde()
    entry = ValueEntry(np.zeros(100_000), META)
    data = serde.dumps(KEY, entry)
    assert data[3] & 1 and len(data) < 10_000
    assert serde.read_meta(KEY, data)[2] > 800_000  # the decoded size
    back = serde.loads(KEY, data)
    np.testing.assert_array_equal(back.value, entry.value)  # type: ignore[union-attr]
    assert back.value.flags.writeable  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [100_000, 2_000_000])  # below and above the sampling size
def test_incompressible_values_are_stored_raw(size: int) -> None:
    serde = Serde()
    payload = np.random.default_rng(0).bytes(size)
    data = serde.dumps(KEY, ValueEntry(payload, META))
    assert not data[3] & 1
    assert serde.loads(KEY, data).value == payload  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"garbage bytes, not an envelope", "not an expcache envelope"),
        (lambda d: d[:10], "not an expcache envelope"),
        (lambda d: d[:-3], "header declares"),
        (lambda d: d + b"x", "header declares"),
        (lambda d: d[:2] + bytes([FORMAT_VERSION + 1]) + d[3:], "envelope format"),
        (lambda d: d[:2] + bytes([2]) + d[3:], "envelope format 2"),
        (lambda d: d[:3] + bytes([0x80]) + d[4:], "unknown flags"),
        (lambda d: d[:48] + bytes(16) + d[64:], "another key"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "digest mismatch"),
        (lambda d: 12345, "not an expcache envelope"),
        (lambda d: "text", "not an expcache envelope"),
    ],
    ids=[
        "garbage", "short", "truncated", "trailing", "version", "old_format", "flags",
        "foreign_key", "digest", "int", "str",
    ],
)
def test_damaged_entries_raise_serde_error(mangle: Callable[[bytes], Any], message: str) -> None:
    serde = Serde()
    data = serde.dumps(KEY, ValueEntry(list(range(100)), META))
    for check in (serde.loads, serde.read_meta, serde.verify):
        with pytest.raises(SerdeError, match=message):
            check(KEY, mangle(data))


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_entry_of_another_key_is_rejected(secret: bytes | None) -> None:
    serde = Serde(secret)
    data = serde.dumps("ex3:0123456789ab:other", ValueEntry(1, META))
    with pytest.raises(SerdeError, match="another key"):
        serde.loads(KEY, data)


def test_signed_entry_replayed_with_the_key_digest_patched_is_rejected() -> None:
    """The HMAC covers the key's own bytes, not just the header's (non-cryptographic) digest."""
    serde = Serde(SECRET)
    other = "ex3:0123456789ab:other"
    data = bytearray(serde.dumps(other, ValueEntry(1, META)))
    data[48:64] = serde.dumps(KEY, ValueEntry(1, META))[48:64]
    with pytest.raises(SignatureError, match="invalid signature"):
        serde.loads(KEY, bytes(data))


@pytest.mark.parametrize("kind", ["raw_pickle", "unsigned", "bad_mac", "other_secret"])
def test_signing_rejects_forgeries_before_unpickling(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    entry = ValueEntry(Touch(marker), META)
    signed = Serde(SECRET).dumps(KEY, ValueEntry("harmless", META))
    payload = pickle.dumps(Touch(marker), protocol=5)
    data = {
        "raw_pickle": payload,
        "unsigned": Serde().dumps(KEY, entry),
        # a real signed header with the body swapped for the payload, lengths fixed up
        "bad_mac": Serde(b"o" * 32).dumps(KEY, entry)[:-32] + signed[-32:],
        "other_secret": Serde(b"o" * 32).dumps(KEY, entry),
    }[kind]
    assert not marker.exists()
    for check in (Serde(SECRET).loads, Serde(SECRET).read_meta, Serde(SECRET).verify):
        with pytest.raises(SerdeError):
            check(KEY, data)
    assert not marker.exists()


def test_the_forged_payload_is_real(tmp_path: Path) -> None:
    """Without a key the same bytes execute on read: the threat the signature removes."""
    marker = tmp_path / "pwned"
    Serde().loads(KEY, Serde().dumps(KEY, ValueEntry(Touch(marker), META)))
    assert marker.exists()


def test_mac_covers_the_body() -> None:
    serde = Serde(SECRET)
    data = bytearray(serde.dumps(KEY, ValueEntry("abcdef", META)))
    data[-40] ^= 1  # in the payload, before the 32-byte trailer
    with pytest.raises(SignatureError, match="invalid signature"):
        serde.loads(KEY, bytes(data))


def test_signed_entry_without_a_key_is_rejected() -> None:
    with pytest.raises(SignatureError, match=ENV_SIGNING_KEY):
        Serde().loads(KEY, Serde(SECRET).dumps(KEY, ValueEntry(1, META)))


def test_unsigned_entry_under_signing_is_rejected() -> None:
    with pytest.raises(SignatureError, match="not signed"):
        Serde(SECRET).loads(KEY, Serde().dumps(KEY, ValueEntry(1, META)))


@pytest.mark.parametrize("short", [b"short", "short", b"x" * 15])
def test_short_keys_are_refused_with_the_fix(short: bytes | str) -> None:
    with pytest.raises(ConfigError, match=r"signing_key.*16 bytes.*secrets") as info:
        Serde(short)
    assert info.value.param == "signing_key" and info.value.secret
    assert "short" not in str(info.value) and "xxx" not in str(info.value)


@pytest.mark.parametrize("unsigned", [None, "", b""])
def test_empty_signing_key_means_unsigned(unsigned: bytes | str | None) -> None:
    serde = Serde(unsigned)
    assert not serde.signed and serde.signing_key is None


def test_a_str_signing_key_is_its_utf8_bytes() -> None:
    data = Serde("k" * 20).dumps(KEY, ValueEntry(1, META))
    assert Serde(b"k" * 20).loads(KEY, data).value == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"signing_key": 12345}, "signing_key"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": 1.5}, "max_size"),
        ({"max_size": True}, "max_size"),
        ({"compress_min": 0}, "compress_min"),
        ({"codec": object()}, "codec"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigError) as info:
        Serde(**kwargs)
    assert info.value.param == param


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SIGNING_KEY, raising=False)
    assert signing_key_from_env() is None
    monkeypatch.setenv(ENV_SIGNING_KEY, "")
    assert signing_key_from_env() is None
    monkeypatch.setenv(ENV_SIGNING_KEY, "k" * 20)
    assert signing_key_from_env() == b"k" * 20
    monkeypatch.setenv(ENV_SIGNING_KEY, "short")
    with pytest.raises(ConfigError, match=ENV_SIGNING_KEY) as info:
        signing_key_from_env()
    assert info.value.param == ENV_SIGNING_KEY and info.value.secret
    assert "short" not in str(info.value)


def test_serde_pickles_with_its_settings() -> None:
    serde = Serde(SECRET, max_size=1 << 20, compress_min=100)
    clone = pickle.loads(pickle.dumps(serde))
    assert (clone.signing_key, clone.max_size, clone.compress_min) == (SECRET, 1 << 20, 100)
    assert clone.loads(KEY, serde.dumps(KEY, ValueEntry(2.5, META))).value == 2.5  # type: ignore[union-attr]
    assert Serde().max_size == DEFAULT_MAX_SIZE


# -- what dumps refuses ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry",
    [
        ("v", 1.0, 0.5),  # the old positional layout
        ValueEntry(lambda: 1, META),
        ValueEntry(1, ("pkg", 0.0)),  # type: ignore[arg-type]
        ValueEntry(1, Meta(identity=b"not 16 bytes")),
        MomentsEntry(Moments(0, 1.0, 0.0), META),
        MomentsEntry(Moments(2, float("nan"), 0.0), META),
        MomentsEntry((3, 1.0, 0.0), META),  # type: ignore[arg-type]
    ],
    ids=["tuple", "unpicklable", "meta_tuple", "identity", "n_zero", "nan", "moments_tuple"],
)
def test_entries_that_cannot_be_stored_are_serde_errors(entry: Any) -> None:
    with pytest.raises(SerdeError):
        Serde().dumps(KEY, entry)


def test_payloads_over_max_size_are_too_large_in_both_directions() -> None:
    big = np.zeros(1 << 17)  # 1 MiB, compresses to almost nothing
    with pytest.raises(ValueTooLarge, match="max_size"):
        Serde(max_size=1 << 19).dumps(KEY, ValueEntry(big, META))
    data = Serde().dumps(KEY, ValueEntry(big, META))
    assert len(data) < 1 << 19
    with pytest.raises(SerdeError, match="max_size"):
        Serde(max_size=1 << 19).loads(KEY, data)
