"""numpy and pandas values: arrays by dtype, shape and a digest of their bytes; scalars like
the Python value of the same type; random generators by state; pandas objects by contents.

Arrays are hashed from their buffer (C order, little-endian) without copying when they are
contiguous, so a 1e5-element argument costs one xxh3 pass. pandas is never imported here:
its types are only met when the user already did.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import tags as T
from .encode import (
    _BIG_ENDIAN,
    DISPATCH,
    Ctx,
    Enc,
    H,
    Q,
    Unencodable,
    _enc_int,
    _enc_list,
    encode,
    encode_at,
    fallback,
    qualname,
    s,
)
from .objects import RESOLVERS, _enc_object

__all__: list[str] = []


_ARRAY_HEADS: dict[np.dtype[Any], bytes] = {}  # dtype -> header, for plain little-endian dtypes


def _enc_ndarray(a: np.ndarray[Any, Any], out: list[bytes], ctx: Ctx) -> None:
    head = _ARRAY_HEADS.get(a.dtype)
    if head is None:
        dtype = a.dtype
        if dtype.hasobject or dtype.fields is not None or dtype.kind == "T":
            # Object/structured/StringDType buffers hold pointers or padding: go element-wise.
            spec = dtype.str if dtype.fields is None else repr(dtype.descr)
            out.append(T.OBJECT_ARRAY + s(spec) + Q(a.ndim) + b"".join(Q(n) for n in a.shape))
            _enc_list(a.ravel().tolist(), out, ctx)
            return
        if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
            raise Unencodable(a, "is long double: its padding bytes are undefined; use float64")
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and _BIG_ENDIAN):
            a = a.astype(dtype.newbyteorder("<"))  # one byte order: keys agree across machines
            dtype = a.dtype
        head = _ARRAY_HEADS.setdefault(dtype, T.ARRAY + s(dtype.str))
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)  # F-order and strided views hash like their C copy
    try:
        d = H(a)
    except (BufferError, TypeError, ValueError):  # dtypes without a buffer format
        d = H(a.reshape(-1).view(np.uint8))
    out.append(head + Q(a.ndim) + b"".join(Q(n) for n in a.shape) + d)


def _enc_ndarray_sub(a: np.ndarray[Any, Any], out: list[bytes], ctx: Ctx) -> None:
    if isinstance(a, np.ma.MaskedArray):
        mask = np.broadcast_to(np.asarray(a.mask, dtype=bool), a.shape)
        out.append(T.MASKED_ARRAY)
        _enc_ndarray(np.where(mask, np.zeros((), a.dtype), a.data), out, ctx)
        _enc_ndarray(mask, out, ctx)
    elif isinstance(a, (np.memmap, np.matrix)):
        out.append(T.NDARRAY_SUBCLASS + s(qualname(type(a))))
        _enc_ndarray(np.asarray(a), out, ctx)
    else:  # unknown subclasses may carry state outside the buffer (units, metadata)
        fallback(a, out, ctx, "is an ndarray subclass with possible extra state")


def _numpy_scalar_encoder(t: type) -> Enc:
    """Scalars of the types Python itself has key like the Python value; others keep dtype."""
    if issubclass(t, np.bool_):
        return lambda x, out, ctx: out.append(T.TRUE if x else T.FALSE)
    if issubclass(t, np.integer):
        return lambda x, out, ctx: _enc_int(int(x), out, ctx)
    for np_t, py_t in ((np.float64, float), (np.complex128, complex), (np.str_, str)):
        if issubclass(t, np_t):
            return DISPATCH[py_t]
    if issubclass(t, np.bytes_):
        return DISPATCH[bytes]

    def other(x: Any, out: list[bytes], ctx: Ctx) -> None:  # float32, datetime64, ...
        out.append(T.NUMPY_SCALAR)
        _enc_ndarray(np.asarray(x), out, ctx)

    return other


def _enc_seed_sequence(x: Any, out: list[bytes], ctx: Ctx) -> None:
    entropy = x.entropy
    if entropy is not None and not isinstance(entropy, int):
        entropy = tuple(int(e) for e in np.asarray(entropy).ravel())
    out.append(T.SEED_SEQUENCE)
    encode((entropy, tuple(int(k) for k in x.spawn_key), int(x.pool_size)), out, ctx)
    _enc_int(int(x.n_children_spawned), out, ctx)


def _enc_bit_generator(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.BIT_GENERATOR + s(qualname(type(x))))
    encode(x.state, out, ctx)
    seq = getattr(x, "seed_seq", None) or getattr(x, "_seed_seq", None)  # decides spawn()
    encode(seq if isinstance(seq, np.random.SeedSequence) else None, out, ctx)


def _enc_generator(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.GENERATOR + s(qualname(type(x))))
    _enc_bit_generator(x.bit_generator, out, ctx)


def _enc_random_state(x: Any, out: list[bytes], ctx: Ctx) -> None:
    out.append(T.RANDOM_STATE + s(qualname(type(x))))
    encode(x.get_state(legacy=False), out, ctx)


def _pandas(obj: Any, out: list[bytes], ctx: Ctx, pd: Any) -> bool:
    """Only reached when the user already imported pandas; we never import it ourselves."""

    def values(x: Any) -> None:
        out.append(s(str(x.dtype)))
        cats = getattr(x.dtype, "categories", None)
        if cats is not None:
            encode((cats.to_numpy(), bool(x.dtype.ordered)), out, ctx)
        encode(x.to_numpy(), out, ctx)

    if isinstance(obj, pd.DataFrame):
        out.append(T.DATAFRAME + Q(obj.shape[1]))
        encode_at(obj.columns, out, ctx, ".columns")
        encode_at(obj.index, out, ctx, ".index")
        for i in range(obj.shape[1]):
            values(obj.iloc[:, i])
    elif isinstance(obj, pd.Series):
        out.append(T.SERIES)
        encode_at((obj.name, obj.index), out, ctx, ".index")
        values(obj)
    elif isinstance(obj, pd.Index):
        out.append(T.PANDAS_INDEX)
        encode(list(obj.names), out, ctx)
        values(obj)
    elif obj is pd.NaT or obj is pd.NA:
        out.append(T.PANDAS_MISSING + s(repr(obj)))
    elif isinstance(obj, (pd.Timestamp, pd.Timedelta)):
        tz = str(getattr(obj, "tz", None))
        out.append(T.PANDAS_TIME + s(qualname(type(obj))) + s(obj.isoformat()) + s(tz))
    else:
        return False
    return True


def _enc_pandas(obj: Any, out: list[bytes], ctx: Ctx) -> None:
    pd = sys.modules.get("pandas")
    if pd is None or not _pandas(obj, out, ctx, pd):
        _enc_object(obj, out, ctx)


def _resolve(t: type) -> Enc | None:
    if issubclass(t, np.generic):
        return _numpy_scalar_encoder(t)
    if issubclass(t, np.ndarray):
        return _enc_ndarray_sub
    random = np.random
    for base, enc in (
        (random.SeedSequence, _enc_seed_sequence),
        (random.BitGenerator, _enc_bit_generator),
        (random.Generator, _enc_generator),
        (random.RandomState, _enc_random_state),
    ):
        if issubclass(t, base):
            return enc
    if t.__module__.startswith("pandas"):
        return _enc_pandas
    return None


RESOLVERS.append(_resolve)
DISPATCH[np.ndarray] = _enc_ndarray
for _n in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.longlong, np.ulonglong, np.float16, np.float32, np.float64, np.longdouble,
    np.complex64, np.complex128, np.clongdouble, np.str_, np.bytes_, np.datetime64,
    np.timedelta64,
):  # fmt: skip
    DISPATCH[_n] = _numpy_scalar_encoder(_n)
for _r, _e in (
    (np.random.SeedSequence, _enc_seed_sequence),
    (np.random.Generator, _enc_generator),
    (np.random.RandomState, _enc_random_state),
    (np.random.PCG64, _enc_bit_generator),
    (np.random.PCG64DXSM, _enc_bit_generator),
    (np.random.MT19937, _enc_bit_generator),
    (np.random.Philox, _enc_bit_generator),
    (np.random.SFC64, _enc_bit_generator),
):
    DISPATCH[_r] = _e
