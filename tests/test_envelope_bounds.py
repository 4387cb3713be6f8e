"""Guarantee 3 of issue 11: nothing decoded raises anything but SerdeError, or allocates more
than ``max_size``. Envelopes here are *forged*: well-formed and correctly digested (or signed),
so they reach the checks behind the digest that random damage never gets to."""

from __future__ import annotations

import contextlib
import hmac
import pickle
import struct
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expcache import Memoized, MemoryBackend, Moments, RepetitionPolicy, SerdeError
from expcache.entries import Meta, MomentsEntry, ValueEntry
from expcache.serde import FORMAT_VERSION, MAGIC, Serde

KEY = "ex3:0123456789ab:0123456789abcdef0123456789abcdef"
SECRET = b"k" * 32
FIXED = struct.Struct("<2sBBBBHHHIddQQ16s")
GIB = 1 << 30


def forge(
    body: bytes,
    *,
    key: str = KEY,
    kind: int = 1,
    flags: int = 0,
    cflags: int = 0,
    created: float = 0.0,
    seconds: float = 0.0,
    identity: bytes = b"",
    function: bytes = b"",
    args: bytes = b"",
    raw: int | None = None,
    blen: int | None = None,
    lengths: tuple[int, int, int] | None = None,
    reserved: int = 0,
    secret: bytes | None = None,
) -> bytes:
    """An envelope with any header fields, digested (or signed) correctly."""
    if secret is not None:
        flags |= 2
    lid, lfn, largs = lengths or (len(identity), len(function), len(args))
    header = FIXED.pack(
        MAGIC, FORMAT_VERSION, flags, kind, lid, lfn, largs, reserved, cflags, created, seconds,
        len(body) if blen is None else blen, len(body) if raw is None else raw,
        xxhash.xxh3_128_digest(key.encode()),
    ) + identity + function + args
    if secret is None:
        return header + body + xxhash.xxh3_128_digest(header + body)
    return header + body + hmac.digest(secret, header + body + key.encode(), "sha256")


def test_forge_makes_what_serde_makes() -> None:
    """The forger is faithful: the same fields give the same bytes as ``dumps``."""
    meta = Meta("f", 1.0, 2.0, b"i" * 16, b"a")
    for secret in (None, SECRET):
        made = Serde(secret).dumps(KEY, ValueEntry(0.5, meta))
        assert made == forge(
            struct.pack("<d", 0.5), flags=16, created=1.0, seconds=2.0, identity=b"i" * 16,
            function=b"f", args=b"a", secret=secret,
        )


# -- a zlib bomb -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros, deflated (about 4.6 MB), built without holding the GiB."""
    zeros = bytes(1 << 24)
    deflater = zlib.compressobj(1)
    parts = [deflater.compress(zeros) for _ in range(GIB // len(zeros))]
    parts.append(deflater.flush())
    return b"".join(parts)


def peak_allocation(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", [1, 2], ids=["value", "moments"])
def test_an_honestly_declared_bomb_is_refused_before_inflating(bomb: bytes, kind: int) -> None:
    data = forge(bomb, kind=kind, flags=1, raw=GIB)
    serde = Serde(max_size=1 << 20)

    def load() -> None:
        with pytest.raises(SerdeError, match="max_size"):
            serde.loads(KEY, data)

    assert peak_allocation(load) < 1 << 20


@pytest.mark.parametrize("declared", [1000, 4 << 20], ids=["tiny", "at_max_size"])
@pytest.mark.parametrize("kind", [1, 2], ids=["value", "moments"])
def test_a_bomb_that_lies_about_its_size_inflates_no_further(
    bomb: bytes, declared: int, kind: int
) -> None:
    data = forge(bomb, kind=kind, flags=1, raw=declared)
    serde = Serde(max_size=4 << 20)
    for check in (serde.loads, serde.verify):

        def load(check: Any = check) -> None:
            with pytest.raises(SerdeError, match="longer than declared"):
                check(KEY, data)

        assert peak_allocation(load) < declared + (2 << 20)  # the buffer + zlib's chunks


def test_a_truncated_or_trailing_zlib_stream_is_refused() -> None:
    stream = zlib.compress(pickle.dumps(list(range(1000))))
    declared = len(zlib.decompress(stream))
    with pytest.raises(SerdeError, match="shorter than declared"):
        Serde().loads(KEY, forge(stream[:-20], flags=1, raw=declared))
    with pytest.raises(SerdeError, match="bytes after the compressed payload"):
        Serde().loads(KEY, forge(stream + b"junk", flags=1, raw=declared))
    with pytest.raises(SerdeError, match="shorter than declared"):
        Serde().loads(KEY, forge(stream, flags=1, raw=declared + 1))
    assert Serde().loads(KEY, forge(stream, flags=1, raw=declared)).value == list(range(1000))  # type: ignore[union-attr]


# -- lengths that exceed the data ---------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"blen": 10**12},
        {"blen": 3},
        {"lengths": (16, 0, 0)},
        {"lengths": (0, 65535, 0)},
        {"lengths": (0, 0, 65535)},
        {"raw": 10**12},
        {"raw": 7},  # uncompressed: must equal the body length
    ],
    ids=["body", "body_short", "identity", "function", "args", "raw", "raw_mismatch"],
)
def test_declared_lengths_beyond_the_data_are_refused(fields: dict[str, Any]) -> None:
    data = forge(pickle.dumps("x" * 20), **fields)
    serde = Serde()
    for check in (serde.loads, serde.read_meta, serde.verify):
        with pytest.raises(SerdeError, match="declares"):
            check(KEY, data)


# -- well-formed, correctly digested, and still wrong ---------------------------------------------
class Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        return (eval, (f"(_ for _ in ()).throw({self.exc!r})",))


def moments(n: int, mean: float, m2: float) -> bytes:
    return struct.pack("<qBB6xdd", n, 0, 0, mean, m2)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (forge(pickle.dumps(("v",)), kind=2), "moments"),
        (forge(pickle.dumps(("v", 1, None)), kind=2), "moments"),
        (forge(pickle.dumps(("m", 3, -1.5, 0.25, 0.0)), kind=2), "moments"),
        (forge(moments(-1, 1.0, 0.0), kind=2), "n=-1"),
        (forge(moments(0, 1.0, 0.0), kind=2), "n=0"),
        (forge(moments(3, float("nan"), 0.0), kind=2), "finite"),
        (forge(moments(3, 1.0, -0.5), kind=2), "m2 >= 0"),
        (forge(moments(3, 1.0, 0.0), kind=3), "malformed header"),
        (forge(moments(3, 1.0, 0.0), kind=2, flags=8), "malformed header"),
        (forge(b"12345678", flags=16, raw=8, blen=8, cflags=1), "malformed header"),
        (forge(b"1234", flags=16), "malformed header"),
        (forge(b"x", flags=4 | 8), "malformed header"),
        (forge(b"x", flags=4 | 16), "malformed header"),
        (forge(pickle.dumps(1), reserved=1), "malformed header"),
        (forge(pickle.dumps(1), identity=b"i" * 5), "malformed header"),
        (forge(pickle.dumps(1), flags=0x40), "unknown flags"),
        (forge(pickle.dumps(1), seconds=float("nan")), "seconds"),
        (forge(pickle.dumps(1), seconds=-1.0), "seconds"),
        (forge(pickle.dumps(1), created=float("inf")), "created"),
        (forge(pickle.dumps(1), function=b"\xff\xfe"), "utf-8"),
        (forge(b"not a pickle at all"), "cannot be decoded"),
        (forge(pickle.dumps(list(range(50)))[:-5]), "cannot be decoded"),
        (forge(pickle.dumps(Raises(ZeroDivisionError("x")))), "ZeroDivisionError"),
        (forge(pickle.dumps(Raises(IndexError("x")))), "IndexError"),
        (forge(pickle.dumps(Raises(MemoryError()))), "MemoryError"),
        (forge(pickle.dumps(1), key="ex3:0123456789ab:another"), "another key"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_forged_layouts_are_serde_errors(envelope: bytes, message: str) -> None:
    with pytest.raises(SerdeError, match=message):
        Serde().loads(KEY, envelope)
    with pytest.raises(SerdeError, match=message):
        Serde().loads(KEY, bytearray(envelope))


def test_a_forged_layout_is_a_counted_miss_of_a_stochastic_function() -> None:
    backend = MemoryBackend()
    m = Memoized(lambda x: 1.0, backend, repeat=RepetitionPolicy(min_repetitions=2))
    key = m.cache_key(0)
    backend.set(key, forge(moments(-1, 1.0, 0.0), key=key, kind=2))
    assert m(0) == 1.0
    assert m.stats.corrupt == 1 and m.stats.misses == 1
    back = Serde().loads(key, backend.get(key))  # type: ignore[arg-type]
    assert isinstance(back, MomentsEntry) and back.moments.n == 1  # replaced by a valid one


# -- fuzz ----------------------------------------------------------------------------------------
FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SERDES = [Serde(), Serde(SECRET), Serde(max_size=4096)]
GOOD = [
    Serde(secret).dumps(KEY, entry)
    for secret in (None, SECRET)
    for entry in (
        ValueEntry(0.25, Meta("f", 1.0, 2.0, b"i" * 16, b"args")),
        ValueEntry({"a": [1, 2, 3], "b": "x" * 300}, Meta()),
        ValueEntry(np.arange(5000.0), Meta("g")),
        MomentsEntry(Moments(3, np.ones(4), np.zeros(4)), Meta()),
        MomentsEntry(Moments(3, 0.5, 0.0), Meta("h", seconds=1.0)),
    )
]
GOOD += [Serde(compress_min=1).dumps(KEY, ValueEntry("z" * 2000, Meta()))]


def only_serde_errors(data: Any) -> None:
    for serde in SERDES:
        for check in (serde.loads, serde.read_meta, serde.verify):
            with contextlib.suppress(SerdeError):
                check(KEY, data)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    only_serde_errors(data)
    only_serde_errors(MAGIC + bytes((FORMAT_VERSION,)) + data)


@FUZZ
@given(st.sampled_from(GOOD), st.data())
def test_truncations_and_mutations_of_valid_envelopes(good: bytes, draw: st.DataObject) -> None:
    end = draw.draw(st.integers(0, len(good)))
    only_serde_errors(good[:end])
    damaged = bytearray(good)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["set", "insert", "delete"]))
        at = draw.draw(st.integers(0, len(damaged) - 1))
        if op == "set":
            damaged[at] = draw.draw(st.integers(0, 255))
        elif op == "insert":
            damaged[at:at] = draw.draw(st.binary(min_size=1, max_size=8))
        else:
            del damaged[at]
    if damaged != good:
        for serde in SERDES:
            with pytest.raises(SerdeError):
                serde.loads(KEY, bytes(damaged))
    only_serde_errors(damaged)
    only_serde_errors(memoryview(damaged))


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(moments, st.integers(-(2**63), 2**63 - 1), st.floats(), st.floats()),
        st.builds(
            lambda n, ndim, dims, tail: struct.pack("<qBB6x", n, 1, ndim)
            + struct.pack(f"<{len(dims)}Q", *dims) + tail,
            st.integers(-5, 5), st.integers(0, 40),
            st.lists(st.integers(0, 2**64 - 1), max_size=4), st.binary(max_size=64),
        ),
        st.builds(
            lambda count, plen, spans, tail: struct.pack("<IIQ", count, 0, plen)
            + struct.pack(f"<{len(spans)}Q", *spans) + tail,
            st.integers(0, 4), st.integers(0, 64),
            st.lists(st.integers(0, 300), max_size=8), st.binary(max_size=300),
        ),
    ),
    kind=st.integers(0, 3),
    flags=st.sampled_from([0, 1, 4, 8, 16, 1 | 8, 1 | 16, 0x20]),
    cflags=st.sampled_from([0, 1, 2**32 - 1]),
    seconds=st.floats(),
    created=st.floats(),
    lengths=st.one_of(st.none(), st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20))),
    raw=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    function=st.binary(max_size=8),
)
def test_forged_headers_and_bodies_decode_or_raise_serde_error(**fields: Any) -> None:
    """Structure behind a valid digest: an entry or a SerdeError, never anything else."""
    body = fields.pop("body")
    data = forge(body, **fields)
    for serde in (Serde(), Serde(max_size=4096)):
        try:
            entry = serde.loads(KEY, data)
        except SerdeError:
            continue
        assert isinstance(entry, (ValueEntry, MomentsEntry))
        serde.verify(KEY, data)  # what loads accepts, verify accepts
        assert serde.read_meta(KEY, data)[1] == entry.meta
