"""Guarantee 2 of issue 11: one flipped byte anywhere, signed or not, is a SerdeError.

Exhaustive over every byte of small envelopes of each kind, then for real on disk: a byte
patched inside a diskcache value file, and a float patched inside the SQLite file, read back
through ``DiskBackend`` (the issue's reproduction came back as a hit with ``corrupt=0``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from expcache import Memoized, Moments, SerdeError
from expcache.backends import DiskBackend
from expcache.entries import Entry, Meta, MomentsEntry, ValueEntry
from expcache.serde import Serde

KEY = "ns:ex3:0123456789ab:0123456789abcdef0123456789abcdef"
SECRET = b"0123456789abcdef0123456789abcdef"
META = Meta(function="pkg.utility", created=1.7e9, seconds=0.5, identity=b"\x01" * 16,
            args=b"\x02" * 20)

ENTRIES: dict[str, Entry] = {
    "float": ValueEntry(0.8596, META),
    "pickle": ValueEntry({"score": 3.75, "text": "abc" * 40}, META),
    "moments": MomentsEntry(Moments(7, 0.5, 1.25), META),
    "moments_array": MomentsEntry(Moments(7, np.zeros(40), np.zeros(40)), META),
}


def variants() -> Iterator[tuple[str, Serde, Serde, Entry]]:
    """(id, writer, reader, entry): every kind, signed or not, compressed or not."""
    for name, entry in ENTRIES.items():
        for signed in (False, True):
            for compressed in (False, True):
                if compressed and name == "float":
                    continue  # 8 bytes never compress
                secret = SECRET if signed else None
                writer = Serde(secret, compress_min=1 if compressed else 1 << 20)
                tag = f"{name}-{'signed' if signed else 'unsigned'}-{'zlib' if compressed else 'raw'}"
                yield tag, writer, Serde(secret), entry


VARIANTS = list(variants())


@pytest.mark.parametrize(("tag", "writer", "reader", "entry"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_flipped_byte_is_a_serde_error(
    tag: str, writer: Serde, reader: Serde, entry: Entry
) -> None:
    data = writer.dumps(KEY, entry)
    assert bool(data[3] & 1) == tag.endswith("zlib")  # the variant is what it says
    reader.loads(KEY, data)  # intact: fine
    for position in range(len(data)):
        for pattern in (0xFF, 0x01, 0x80):
            damaged = bytearray(data)
            damaged[position] ^= pattern
            for form in (bytes(damaged), damaged):
                with pytest.raises(SerdeError):
                    reader.loads(KEY, form)
            with pytest.raises(SerdeError):
                reader.read_meta(KEY, damaged)
            with pytest.raises(SerdeError):
                reader.verify(KEY, damaged)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_flipped_bytes_in_out_of_band_arrays_are_serde_errors(secret: bytes | None) -> None:
    serde = Serde(secret)
    array = np.random.default_rng(1).random(8192)  # 64 KiB: out of band, incompressible
    data = serde.dumps(KEY, ValueEntry(array, META))
    assert data[3] & 8  # buffers flag
    positions = [*range(400), *range(400, len(data), 97), len(data) - 1]  # header + table dense
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        with pytest.raises(SerdeError):
            serde.loads(KEY, damaged)
        with pytest.raises(SerdeError):
            serde.loads(KEY, bytes(damaged))


# -- on disk -------------------------------------------------------------------------------------
def patch_files(directory: Path, old: bytes, new: bytes) -> int:
    """Replace ``old`` by ``new`` in every file diskcache keeps (SQLite, WAL, value files)."""
    assert len(old) == len(new) and old != new
    patched = 0
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        content = path.read_bytes()
        if old in content:
            patched += content.count(old)
            path.write_bytes(content.replace(old, new))
    return patched


def close(backend: DiskBackend) -> None:
    backend.cache.close()  # the last connection: SQLite checkpoints the WAL into cache.db


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_a_float_patched_inside_cache_db_is_a_serde_error(tmp_path: Path, secret: bytes | None) -> None:
    serde = Serde(secret)
    backend = DiskBackend(tmp_path)
    backend.set(KEY, serde.dumps(KEY, ValueEntry(0.8596, META)))
    close(backend)
    assert not list(tmp_path.rglob("*.val"))  # small: a BLOB inside cache.db
    assert patch_files(tmp_path, struct.pack("<d", 0.8596), struct.pack("<d", 12345.0)) >= 1
    data = DiskBackend(tmp_path).get(KEY)
    assert data is not None and struct.pack("<d", 12345.0) in data  # it reached the reader
    with pytest.raises(SerdeError):
        serde.loads(KEY, data)


def test_a_pickled_float_patched_inside_cache_db_is_a_serde_error(tmp_path: Path) -> None:
    serde = Serde()
    backend = DiskBackend(tmp_path)
    backend.set(KEY, serde.dumps(KEY, ValueEntry({"score": 3.75}, META)))
    close(backend)
    # pickle's BINFLOAT is big-endian
    assert patch_files(tmp_path, struct.pack(">d", 3.75), struct.pack(">d", 666.0)) >= 1
    data = DiskBackend(tmp_path).get(KEY)
    assert data is not None and struct.pack(">d", 666.0) in data
    with pytest.raises(SerdeError, match="digest mismatch"):
        serde.loads(KEY, data)


@pytest.mark.parametrize("container", [bytes, bytearray], ids=["bytes", "bytearray"])
def test_a_byte_flipped_in_a_diskcache_value_file_is_a_serde_error(
    tmp_path: Path, container: type
) -> None:
    serde = Serde()
    array = np.random.default_rng(2).random(50_000)
    backend = DiskBackend(tmp_path)
    backend.set(KEY, serde.dumps(KEY, ValueEntry(array, META)))
    close(backend)
    (value_file,) = tmp_path.rglob("*.val")  # large: a file of its own
    content = bytearray(value_file.read_bytes())
    content[len(content) // 2] ^= 0xFF  # inside the array's bytes
    value_file.write_bytes(content)
    data = DiskBackend(tmp_path).get(KEY)
    assert data is not None
    with pytest.raises(SerdeError, match="digest mismatch"):
        serde.loads(KEY, container(data))


def test_the_issue_reproduction_is_a_counted_miss(tmp_path: Path) -> None:
    """Issue 11: 12345.0 came back instead of 0.8596, with corrupt=0."""
    runs: list[int] = []

    def utility(x: int) -> float:
        runs.append(x)
        return 0.8596

    m = Memoized(utility, DiskBackend(tmp_path), time_threshold=0, lease=False, signature=b"u")
    assert m(1) == 0.8596 and m.stats.sets == 1
    close(m.backend)  # type: ignore[arg-type]
    patched = sum(  # as a bare float, or inside a pickle (big-endian), whichever is there
        patch_files(tmp_path, struct.pack(order, 0.8596), struct.pack(order, 12345.0))
        for order in ("<d", ">d")
    )
    assert patched >= 1
    fresh = Memoized(
        utility, DiskBackend(tmp_path), time_threshold=0, lease=False, signature=b"u"
    )
    assert fresh(1) == 0.8596
    assert fresh.stats.corrupt == 1 and fresh.stats.hits == 0 and runs == [1, 1]
    assert fresh(1) == 0.8596 and fresh.stats.hits == 1  # recomputed and overwritten
