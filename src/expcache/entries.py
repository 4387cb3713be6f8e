"""What the cache stores, as types -- a value or running moments, each with its ``Meta`` --
and how each payload is laid out inside the envelope (``serde``).

The memoizer used to store positional tuples (``("v", value, seconds)``) and read them back
as ``entry[1:4]``: any other layout that happened to decode broke the call with an
``IndexError`` or ``TypeError``. Here the kind of an entry travels in the envelope's header,
``Meta`` in its header fields, and the only payload with a structure of its own -- the running
moments -- has a fixed binary layout that is checked completely on decode. Nothing that fails
those checks becomes an entry: it is a ``SerdeError``, which the memoizer counts as a miss.

Moments are never pickled. Their payload is plain little-endian numbers::

    i64 n | u8 form (0 float, 1 float64 array) | u8 ndim | 6 zero bytes
          | ndim x u64 shape | mean (8 bytes per element) | m2 (8 bytes per element)

so reading the running moments of a stochastic function cannot run code, even unsigned.
Values are a bare float (8 bytes), a pickle with large buffers out of band (``encode_value``),
or the bytes of a custom codec in pymemcache's protocol.
"""

from __future__ import annotations

import math
import pickle
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .errors import SerdeError
from .policy import Moments

__all__ = [
    "ALIGN",
    "FORM_BUFFERS",
    "FORM_FLOAT",
    "MAX_ARGS",
    "MAX_FUNCTION",
    "OOB_MIN",
    "Entry",
    "Kind",
    "Meta",
    "MomentsEntry",
    "PayloadCodec",
    "ValueEntry",
    "check_meta",
    "check_moments",
    "decode_codec",
    "decode_moments",
    "decode_value",
    "encode_codec",
    "encode_moments",
    "encode_value",
    "kind_of",
    "make_meta",
    "split_buffers",
]

Kind = Literal["value", "moments"]

MAX_FUNCTION: Final = 4096  # bytes of the utf-8 function label
MAX_ARGS: Final = 4096  # bytes of the opaque per-argument digests
IDENTITY_SIZE: Final = 16
_MAX_NDIM: Final = 32  # numpy 1.x's limit (2.x allows 64; no moments array comes near either)


@dataclass(frozen=True, slots=True)
class Meta:
    """What is known about an entry without decoding its payload (``expcache cache ls``).

    ``identity`` groups the entries of one version of a function; ``args`` is opaque to the
    envelope (per-argument digests for ``explain()``). Frozen so that one decoded ``Meta`` can
    be shared without copying.
    """

    function: str = ""
    created: float = 0.0
    seconds: float = 0.0
    identity: bytes = b""
    args: bytes = b""


class ValueEntry(NamedTuple):
    """A deterministic function's result."""

    value: Any
    meta: Meta


class MomentsEntry(NamedTuple):
    """A stochastic function's running moments (``meta.seconds``: of the last sample)."""

    moments: Moments
    meta: Meta


Entry = ValueEntry | MomentsEntry


def kind_of(entry: Any) -> Kind:
    """The kind of an entry; a ``SerdeError`` for anything that is not one."""
    if type(entry) is ValueEntry:
        return "value"
    if type(entry) is MomentsEntry:
        return "moments"
    raise SerdeError(f"not a cache entry: {type(entry).__name__} (expected ValueEntry or MomentsEntry)")


class _Blank:
    """``Meta``'s slots without its frozen ``__setattr__``: built here, then made a ``Meta``."""

    __slots__ = ("args", "created", "function", "identity", "seconds")


_new = object.__new__


def make_meta(function: str, created: float, seconds: float, identity: bytes, args: bytes) -> Meta:
    """A ``Meta`` from already checked fields, at a third of the cost of ``Meta(...)``.

    The decoder builds one ``Meta`` per hit, and the frozen dataclass's ``__init__`` pays an
    ``object.__setattr__`` call per field (~0.55 us). Filling a plain object with the same
    slots and then assigning ``__class__`` (allowed between identical slot layouts) costs
    ~0.15 us; the result is an ordinary, frozen ``Meta`` (checked once at import).
    """
    meta: Any = _new(_Blank)
    meta.function = function
    meta.created = created
    meta.seconds = seconds
    meta.identity = identity
    meta.args = args
    meta.__class__ = Meta
    return meta  # type: ignore[no-any-return]


def _make_meta_slowly(
    function: str, created: float, seconds: float, identity: bytes, args: bytes
) -> Meta:
    return Meta(function, created, seconds, identity, args)


try:  # a Python where the slot layouts are not interchangeable keeps the plain constructor
    if make_meta("f", 1.0, 2.0, b"", b"") != Meta("f", 1.0, 2.0, b"", b""):
        raise TypeError("make_meta")
except TypeError:  # pragma: no cover - CPython and PyPy both allow it
    make_meta = _make_meta_slowly


def check_meta(meta: Any) -> tuple[bytes, float, float, bytes, bytes]:
    """The fields of ``meta`` as the header stores them; ``SerdeError`` if they cannot be.

    Returns ``(function utf-8, created, seconds, identity, args)``.
    """
    if type(meta) is not Meta:
        raise SerdeError(f"entry meta must be a Meta, not {type(meta).__name__}")
    if not isinstance(meta.function, str):
        raise SerdeError(f"Meta.function must be a str, not {type(meta.function).__name__}")
    try:
        function = meta.function.encode()
    except UnicodeError as exc:
        raise SerdeError(f"Meta.function {meta.function!r} is not valid unicode") from exc
    if len(function) > MAX_FUNCTION:
        raise SerdeError(f"Meta.function is {len(function)} bytes long (at most {MAX_FUNCTION})")
    created = _real("created", meta.created)
    seconds = _real("seconds", meta.seconds)
    if seconds < 0.0:
        raise SerdeError(f"Meta.seconds={seconds!r}: must be >= 0")
    identity, args = meta.identity, meta.args
    if type(identity) is not bytes or len(identity) not in (0, IDENTITY_SIZE):
        raise SerdeError(f"Meta.identity must be {IDENTITY_SIZE} bytes or empty, not {identity!r}")
    if type(args) is not bytes or len(args) > MAX_ARGS:
        raise SerdeError(f"Meta.args must be bytes of at most {MAX_ARGS} bytes")
    return function, created, seconds, identity, args


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SerdeError(f"Meta.{name} must be a number, not {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise SerdeError(f"Meta.{name}={x!r}: must be finite")
    return x


# -- moments -------------------------------------------------------------------------------------
def check_moments(moments: Any) -> Moments:
    """``moments`` if it is a valid aggregate, else ``SerdeError``.

    Valid: ``n`` an int >= 1 (not a bool); ``mean`` a finite float, or a finite float64 array;
    ``m2`` >= 0 and finite, a float with a float mean or an array of the mean's shape. The
    memoizer folds these values into new samples and divides by ``n``: anything else would
    raise out of a call, or poison every later mean (a NaN never converges).
    """
    if not isinstance(moments, Moments):
        raise SerdeError(f"moments must be a Moments, not {type(moments).__name__}")
    n, mean, m2 = moments.n, moments.mean, moments.m2
    if type(n) is not int or n < 1:
        raise SerdeError(f"moments: n={n!r} must be an integer >= 1")
    if isinstance(mean, float):  # numpy's float64 scalar is a float too
        if not isinstance(m2, float):
            raise SerdeError(f"moments: m2 must be a float like the mean, not {type(m2).__name__}")
        if not (math.isfinite(mean) and math.isfinite(m2) and m2 >= 0.0):
            raise SerdeError(f"moments: mean={mean!r}, m2={m2!r} must be finite, m2 >= 0")
        return moments
    if not isinstance(mean, np.ndarray) or mean.dtype != np.float64:
        raise SerdeError(
            f"moments: mean must be a float or a float64 array, not {_describe(mean)}"
        )
    if not isinstance(m2, np.ndarray) or m2.dtype != np.float64 or m2.shape != mean.shape:
        raise SerdeError(
            f"moments: m2 must be a float64 array of shape {mean.shape}, not {_describe(m2)}"
        )
    if mean.ndim > _MAX_NDIM:
        raise SerdeError(f"moments: {mean.ndim} dimensions (at most {_MAX_NDIM})")
    if not (np.isfinite(mean).all() and np.isfinite(m2).all() and (m2 >= 0.0).all()):
        raise SerdeError("moments: mean and m2 must be finite, m2 >= 0")
    return moments


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a {x.dtype} array of shape {x.shape}"
    return type(x).__name__


_HEAD: Final = struct.Struct("<qBB6x")
_FLOATS: Final = struct.Struct("<dd")
_FORM_FLOAT: Final = 0
_FORM_ARRAY: Final = 1


def encode_moments(moments: Moments) -> list[bytes | memoryview]:
    """The moments payload, as parts to be joined (the arrays are not copied here).

    A negative ``m2`` can only be rounding (it is a sum of squares), so it is stored as zero;
    everything else ``check_moments`` refuses is a ``SerdeError``.
    """
    mean, m2 = moments.mean, moments.m2
    if isinstance(m2, float) and -math.inf < m2 < 0.0:
        m2 = 0.0
    elif isinstance(m2, np.ndarray) and m2.dtype == np.float64 and (m2 < 0.0).any():
        m2 = np.maximum(m2, 0.0)
    checked = check_moments(Moments(moments.n, mean, m2))
    if isinstance(mean, float):
        return [_HEAD.pack(checked.n, _FORM_FLOAT, 0), _FLOATS.pack(mean, m2)]
    shape = struct.pack(f"<{mean.ndim}Q", *mean.shape)
    return [
        _HEAD.pack(checked.n, _FORM_ARRAY, mean.ndim),
        shape,
        _le_bytes(mean),
        _le_bytes(m2),
    ]


def _le_bytes(array: np.ndarray[Any, Any]) -> memoryview:
    return np.ascontiguousarray(array, dtype="<f8").reshape(-1).data.cast("B")


def decode_moments(body: bytes | bytearray | memoryview) -> Moments:
    """Parse and check a moments payload; ``SerdeError`` for anything not exactly valid."""
    size = len(body)
    if size < _HEAD.size:
        raise SerdeError(f"moments payload of {size} bytes is too short")
    n, form, ndim = _HEAD.unpack_from(body)
    if body[_HEAD.size - 6 : _HEAD.size] != bytes(6):
        raise SerdeError("moments payload has non-zero reserved bytes")
    offset = _HEAD.size
    if form == _FORM_FLOAT:
        if ndim != 0 or size != offset + _FLOATS.size:
            raise SerdeError("moments payload of a float has the wrong size")
        mean, m2 = _FLOATS.unpack_from(body, offset)
        return check_moments(Moments(n, mean, m2))
    if form != _FORM_ARRAY or ndim > _MAX_NDIM:
        raise SerdeError(f"moments payload has an unknown form {form} / {ndim} dimensions")
    if size < offset + 8 * ndim:
        raise SerdeError("moments payload is too short for its shape")
    shape = struct.unpack_from(f"<{ndim}Q", body, offset)
    offset += 8 * ndim
    count = math.prod(shape)  # Python ints: a forged shape cannot overflow
    if size != offset + 16 * count:
        raise SerdeError(f"moments payload of shape {shape} has {size - offset} data bytes")
    # copies: the mean is returned to callers, who may mutate it; aligned, native order
    mean_a = np.frombuffer(body, "<f8", count, offset).astype(np.float64).reshape(shape)
    m2_a = np.frombuffer(body, "<f8", count, offset + 8 * count).astype(np.float64).reshape(shape)
    return check_moments(Moments(n, mean_a, m2_a))


# -- values --------------------------------------------------------------------------------------
FORM_BUFFERS: Final = 8  # the envelope flag of a pickle with out-of-band buffers
FORM_FLOAT: Final = 16  # the envelope flag of a bare float
PICKLE_PROTOCOL: Final = 5
OOB_MIN: Final = 32 * 1024  # smaller buffers stay in the pickle stream (a copy is cheaper)
ALIGN: Final = 64
_MAX_BUFFERS: Final = 1 << 16
_TABLE: Final = struct.Struct("<IIQ")  # buffer count, reserved, pickle length
_F64: Final = struct.Struct("<d")


def encode_value(value: Any, start: int) -> tuple[int, list[Any]]:
    """``(form, parts)`` of a value's payload; ``start`` is where it begins in the envelope.

    A Python float (what most utilities return) is its 8 bytes. Anything else is a pickle
    (protocol 5) whose contiguous buffers of at least ``OOB_MIN`` bytes -- numpy arrays --
    are not copied into the stream but appended after it, each at an offset that is 64-byte
    aligned in the envelope, behind a table of their offsets::

        u32 count | u32 0 | u64 pickle length | count x (u64 offset, u64 length)
              | pickle | (zero padding | buffer) x count

    The parts are views of the value's own memory: the only copy is the envelope's join.
    """
    if type(value) is float:
        return FORM_FLOAT, [_F64.pack(value)]
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: stays in the stream
            return True
        if raw.nbytes < OOB_MIN:
            return True
        buffers.append(raw)
        return False

    try:
        stream = pickle.dumps(value, protocol=PICKLE_PROTOCOL, buffer_callback=out_of_band)
    except Exception as exc:
        raise SerdeError(f"the value cannot be pickled: {exc!r}") from exc
    if not buffers:
        return 0, [stream]
    if len(buffers) > _MAX_BUFFERS:
        raise SerdeError(f"the value has {len(buffers)} large buffers (at most {_MAX_BUFFERS})")
    end = _TABLE.size + 16 * len(buffers) + len(stream)
    spans: list[int] = []
    tail: list[Any] = []
    for buffer in buffers:
        offset = end + (-(start + end) % ALIGN)
        tail += (bytes(offset - end), buffer)
        spans += (offset, buffer.nbytes)
        end = offset + buffer.nbytes
    table = _TABLE.pack(len(buffers), 0, len(stream)) + struct.pack(f"<{len(spans)}Q", *spans)
    return FORM_BUFFERS, [table, stream, *tail]


def decode_value(form: int, body: memoryview, writable: bool) -> Any:
    """The value of a verified payload; runs pickle, so only after the digest or HMAC."""
    if form == FORM_FLOAT:
        return _F64.unpack(body)[0]
    if form == FORM_BUFFERS:
        stream, buffers = split_buffers(body, writable)
        return pickle.loads(stream, buffers=buffers)
    return pickle.loads(body)


def split_buffers(body: memoryview, writable: bool) -> tuple[memoryview, list[Any]]:
    """The pickle stream and its out-of-band buffers, bounds-checked.

    From a writable body the buffers are views (the arrays share the caller's memory, no
    copy); from immutable ``bytes`` each is copied once into a ``bytearray``, because an
    array over ``bytes`` is read-only and callers mutate the results they get.
    """
    size = len(body)
    if size < _TABLE.size:
        raise SerdeError("buffer table truncated")
    count, reserved, plen = _TABLE.unpack_from(body)
    table = _TABLE.size + 16 * count
    if reserved or count > _MAX_BUFFERS or table + plen > size:
        raise SerdeError("malformed buffer table")
    spans = struct.unpack_from(f"<{2 * count}Q", body, _TABLE.size)
    pos = table + plen
    buffers: list[Any] = []
    for i in range(0, 2 * count, 2):
        offset, length = spans[i], spans[i + 1]
        if offset < pos or offset - pos >= ALIGN or offset + length > size:
            raise SerdeError(f"buffer {i // 2} out of bounds")
        view = body[offset : offset + length]
        buffers.append(view if writable else bytearray(view))
        pos = offset + length
    if pos != size:
        raise SerdeError(f"{size - pos} bytes after the last buffer")
    return body[table : table + plen], buffers


# -- a custom codec --------------------------------------------------------------------------------
@runtime_checkable
class PayloadCodec(Protocol):
    """pymemcache's serde protocol (pyDVL 0.7's ``serde=``), given expcache's key."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]: ...

    def deserialize(self, key: str, value: bytes, flags: int) -> Any: ...


def encode_codec(codec: PayloadCodec, key: str, value: Any) -> tuple[int, list[bytes]]:
    """``(flags, parts)`` from the codec; a ``str`` payload is utf-8, as pymemcache does."""
    data: Any
    try:
        data, flags = codec.serialize(key, value)
    except Exception as exc:
        raise SerdeError(f"the codec failed: {exc!r}") from exc
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerdeError(f"the codec returned {type(data).__name__}, expected bytes")
    if type(flags) is not int or not 0 <= flags < 2**32:
        raise SerdeError(f"the codec returned flags {flags!r}, expected a 32-bit int")
    return flags, [bytes(data)]


def decode_codec(codec: PayloadCodec, key: str, body: memoryview, flags: int) -> Any:
    try:
        return codec.deserialize(key, bytes(body), flags)
    except Exception as exc:
        raise SerdeError(f"the codec failed: {exc!r}") from exc
