"""The value envelope: everything is verified before a single byte is unpickled."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache import ConfigError, SerdeError, SignatureError
from expcache.serde import (
    ENV_SIGNING_KEY,
    FORMAT_VERSION,
    MAGIC,
    Serde,
    _key_digest,
    signing_key_from_env,
)

KEY = "ex2:0123456789abcdef0123456789abcdef"
SECRET = b"s" * 32


class Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    "entry",
    [("v", None, 0.1), ("v", {"a": [1, 2.5]}, 0.0), ("m", 3, -1.5, 0.25, 0.0)],
    ids=["none", "dict", "moments"],
)
def test_round_trip(secret: bytes | None, entry: tuple[Any, ...]) -> None:
    serde = Serde(secret)
    data = serde.dumps(KEY, entry)
    assert data[:2] == MAGIC and data[2] == FORMAT_VERSION
    assert serde.loads(KEY, data) == entry


def test_large_compressible_values_are_compressed() -> None:
    serde = Serde()
    entry = ("v", np.zeros(100_000), 1.0)
    data = serde.dumps(KEY, entry)
    assert data[3] & 1 and len(data) < 100_000
    np.testing.assert_array_equal(serde.loads(KEY, data)[1], entry[1])


def test_incompressible_values_are_stored_raw() -> None:
    serde = Serde()
    payload = np.random.default_rng(0).bytes(200_000)
    data = serde.dumps(KEY, ("v", payload, 1.0))
    assert not data[3] & 1
    assert serde.loads(KEY, data)[1] == payload


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"garbage bytes, not an envelope", "not an expcache envelope"),
        (lambda d: d[:10], "not an expcache envelope"),
        (lambda d: d[:-3], "cannot be decoded"),
        (lambda d: d[:2] + bytes([FORMAT_VERSION + 1]) + d[3:], "envelope format"),
        (lambda d: d[:3] + bytes([0x80]) + d[4:], "unknown flags"),
        (lambda d: d[:4] + bytes(16) + d[20:], "another key"),
        (lambda d: 12345, "not an expcache envelope"),
    ],
    ids=["garbage", "short", "truncated", "version", "flags", "foreign_key", "not_bytes"],
)
def test_damaged_entries_raise_serde_error(mangle: Callable[[bytes], Any], message: str) -> None:
    serde = Serde()
    data = serde.dumps(KEY, ("v", list(range(100)), 0.0))
    with pytest.raises(SerdeError, match=message):
        serde.loads(KEY, mangle(data))


def test_entry_of_another_key_is_rejected() -> None:
    serde = Serde(SECRET)
    data = serde.dumps("ex2:other", ("v", 1, 0.0))
    with pytest.raises(SerdeError, match="another key"):
        serde.loads(KEY, data)


@pytest.mark.parametrize("kind", ["raw_pickle", "unsigned", "bad_mac", "other_secret"])
def test_signing_rejects_forgeries_before_unpickling(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Touch(marker), protocol=5)
    header = MAGIC + bytes((FORMAT_VERSION, 2)) + _key_digest(KEY)
    data = {
        "raw_pickle": payload,
        "unsigned": Serde().dumps(KEY, Touch(marker)),
        "bad_mac": header + bytes(32) + payload,
        "other_secret": Serde(b"o" * 32).dumps(KEY, Touch(marker)),
    }[kind]
    assert not marker.exists()
    with pytest.raises(SerdeError):
        Serde(SECRET).loads(KEY, data)
    assert not marker.exists()


def test_the_forged_payload_is_real(tmp_path: Path) -> None:
    """Without a key the same bytes execute on read: the threat the signature removes."""
    marker = tmp_path / "pwned"
    Serde().loads(KEY, Serde().dumps(KEY, Touch(marker)))
    assert marker.exists()


def test_mac_covers_the_body() -> None:
    serde = Serde(SECRET)
    data = bytearray(serde.dumps(KEY, ("v", "abcdef", 0.0)))
    data[-5] ^= 1
    with pytest.raises(SignatureError, match="invalid signature"):
        serde.loads(KEY, bytes(data))


def test_signed_entry_without_a_key_is_rejected() -> None:
    with pytest.raises(SignatureError, match=ENV_SIGNING_KEY):
        Serde().loads(KEY, Serde(SECRET).dumps(KEY, ("v", 1, 0.0)))


def test_short_keys_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"signing_key.*16 bytes.*secrets"):
        Serde(b"short")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_SIGNING_KEY, raising=False)
    assert signing_key_from_env() is None
    monkeypatch.setenv(ENV_SIGNING_KEY, "")
    assert signing_key_from_env() is None
    monkeypatch.setenv(ENV_SIGNING_KEY, "k" * 20)
    assert signing_key_from_env() == b"k" * 20
    monkeypatch.setenv(ENV_SIGNING_KEY, "short")
    with pytest.raises(ConfigError, match=ENV_SIGNING_KEY):
        signing_key_from_env()
