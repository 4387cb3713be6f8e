"""The verified envelope: everything expcache stores goes through here.

Layout (format 3, little-endian; the byte table is in the README)::

    fixed header, 64 bytes: "XC" | format | flags | kind | identity, function, args lengths
        | reserved | codec flags | created | seconds | body length | payload length | xxh3(key)
    identity | function label (utf-8) | args
    body: the payload, zlib-compressed with flag 1
    trailer: unsigned xxh3-128(header | body); signed HMAC-SHA256(header | body | key)

Why it is shaped like this:

- One check over the whole envelope: a flipped byte anywhere -- bit rot in a diskcache file,
  a float patched in SQLite -- is a ``SerdeError`` (a counted miss), never a wrong value.
  Unsigned, the key enters through its digest in the header, compared with the reader's key:
  integrity needs no more, and the hit path stays two short hashes without concatenation.
- Signed, the HMAC covers the key's own bytes too and is verified before anything is
  decoded: a writer with network access to memcached can neither make workers unpickle an
  object of its choosing nor replay a signed entry under another key. The header's lengths
  make ``header | body`` self-delimiting, so appending the key is unambiguous.
- A trailer, so that the check is one contiguous hash and can be computed while reading.
- Every length is checked against the data before use; decompression fills a buffer of the
  declared payload length, at most ``max_size``: a zlib bomb allocates nothing more.
- Only ``SerdeError`` leaves ``loads``/``read_meta``/``verify``, whatever the input.

Payloads (``entries``): moments in a fixed binary layout, a float as its 8 bytes, anything
else a pickle (protocol 5) with large buffers out of band -- or the bytes of a custom codec
in pymemcache's protocol (``serialize(key, value) -> (bytes, flags)``,
``deserialize(key, bytes, flags)``), inside the same verified envelope.
"""

from __future__ import annotations

import hmac
import pickle
import struct
from collections.abc import Sequence
from typing import Any, Final, cast

import xxhash

from . import _validate
from .compress import compress, inflate
from .entries import (
    ALIGN,
    FORM_BUFFERS,
    FORM_FLOAT,
    Entry,
    Kind,
    Meta,
    MomentsEntry,
    PayloadCodec,
    ValueEntry,
    check_meta,
    decode_codec,
    decode_moments,
    decode_value,
    encode_codec,
    encode_moments,
    encode_value,
    kind_of,
    make_meta,
    split_buffers,
)
from .errors import ConfigError, SerdeError, SignatureError, ValueTooLarge
from .signing import ENV_SIGNING_KEY, checked_signing_key, signing_key_from_env

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ENV_SIGNING_KEY",
    "FORMAT_VERSION",
    "MAGIC",
    "PayloadCodec",
    "Serde",
    "signing_key_from_env",
]

MAGIC: Final = b"XC"
FORMAT_VERSION: Final = 3  # 3: digest over everything, Meta and kind in the header (2: key digest)
DEFAULT_MAX_SIZE: Final = 2**30
FLAG_ZLIB: Final = 1
FLAG_SIGNED: Final = 2
FLAG_CODEC: Final = 4  # the payload is a custom codec's bytes (codec flags in the header)
FLAG_BUFFERS: Final = FORM_BUFFERS  # the pickle's large buffers follow it out of band
FLAG_FLOAT: Final = FORM_FLOAT  # the payload is one Python float, as a little-endian f64
_KNOWN_FLAGS: Final = FLAG_ZLIB | FLAG_SIGNED | FLAG_CODEC | FLAG_BUFFERS | FLAG_FLOAT
_PAYLOAD_FLAGS: Final = FLAG_CODEC | FLAG_BUFFERS | FLAG_FLOAT  # at most one, values only
_KINDS: Final[dict[int, Kind]] = {1: "value", 2: "moments"}
_CODES: Final[dict[str, int]] = {"value": 1, "moments": 2}
_FIXED: Final = struct.Struct("<2sBBBBHHHIddQQ16s")  # 64 bytes
_HEAD: Final = _FIXED.size
_DIGEST: Final = 16
_MAC: Final = 32
_INF: Final = float("inf")
_F64_SIZE: Final = 8
# the hit path, bound once
_after_flags = struct.Struct("<4xBBHHHIddQQ").unpack_from
_f64 = struct.Struct("<d").unpack_from
_xxh = xxhash.xxh3_128_digest
_unpickle = pickle.loads
_tuple_new = tuple.__new__


def _key_digest(key: str) -> bytes:
    return _xxh(key.encode())


class Serde:
    """Encodes entries into envelopes and back, verifying before decoding anything.

    ``max_size`` bounds a payload (decompressed) in both directions; ``None`` is
    ``DEFAULT_MAX_SIZE`` (1 GiB). From ``compress_min`` bytes zlib (level 1) is tried and kept
    only when it saves an eighth; bodies over 256 KiB are sampled first (16 KiB), so
    incompressible data (random floats) costs ~0.3 ms instead of a full attempt at ~40 MB/s.

    ``dumps`` raises ``SerdeError`` for an entry that cannot be stored (unpicklable value,
    codec failure, invalid moments or meta) and ``ValueTooLarge`` for a payload over
    ``max_size``. A writable buffer given to ``loads`` is handed over: the value's large
    arrays may be views of it.
    """

    def __init__(
        self,
        signing_key: bytes | str | None = None,
        *,
        max_size: int | None = None,
        codec: PayloadCodec | None = None,
        compress_min: int = 64 * 1024,
    ) -> None:
        if codec is not None and not isinstance(codec, PayloadCodec):
            raise ConfigError(
                param="codec", value=codec,
                expected="an object with serialize(key, value) and deserialize(key, data, flags)",
            )
        self.signing_key = checked_signing_key("signing_key", signing_key)
        self.max_size: int = _validate.integer(
            "max_size", DEFAULT_MAX_SIZE if max_size is None else max_size, ge=1
        )
        self.codec = codec
        self.compress_min: int = _validate.integer("compress_min", compress_min, ge=1)
        self._setup()

    def _setup(self) -> None:
        self._check = _MAC if self.signing_key else _DIGEST
        self._fast = self.codec is None
        signed = FLAG_SIGNED if self.signing_key else 0  # the prefixes of the hit path:
        self._float_prefix = MAGIC + bytes((FORMAT_VERSION, FLAG_FLOAT | signed))
        self._pickle_prefix = MAGIC + bytes((FORMAT_VERSION, signed))
        self._mac = hmac.new(self.signing_key, digestmod="sha256") if self.signing_key else None

    def __getstate__(self) -> dict[str, Any]:  # the HMAC state is rebuilt, not pickled
        return {k: v for k, v in self.__dict__.items() if k != "_mac"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    @property
    def signed(self) -> bool:
        return self.signing_key is not None

    def __repr__(self) -> str:
        codec = "" if self.codec is None else f", codec={type(self.codec).__name__}"
        return f"Serde(signed={self.signed}, max_size={self.max_size}{codec})"

    # -- writing ---------------------------------------------------------------------------------
    def dumps(self, key: str, entry: Entry) -> bytes:
        try:
            kind = kind_of(entry)
            function, created, seconds, identity, args = check_meta(entry.meta)
            hend = _HEAD + len(identity) + len(function) + len(args)
            flags, cflags, parts = self._payload(key, entry, hend)
            raw = sum(map(len, parts))
            if raw > self.max_size:
                raise ValueTooLarge(
                    f"entry under {key!r}: payload of {raw} bytes exceeds max_size={self.max_size}"
                )
            packed = self._compress(parts, raw)
            if packed is not None:
                parts, flags = packed, flags | FLAG_ZLIB
            if self.signing_key:
                flags |= FLAG_SIGNED
            fixed = _FIXED.pack(
                MAGIC, FORMAT_VERSION, flags, _CODES[kind], len(identity), len(function),
                len(args), 0, cflags, created, seconds, sum(map(len, parts)), raw,
                _key_digest(key),
            )
            parts = [fixed, identity, function, args, *parts]
            parts.append(self._seal(key.encode(), parts))
            return b"".join(parts)
        except (SerdeError, ValueTooLarge):
            raise
        except Exception as exc:
            raise SerdeError(f"entry under {key!r} cannot be encoded: {exc!r}") from exc

    def _payload(self, key: str, entry: Entry, start: int) -> tuple[int, int, list[Any]]:
        """``(flags, codec flags, body parts)``; parts are 1-D byte buffers, not copied.
        ``start`` is where the body begins in the envelope (for aligning arrays)."""
        if type(entry) is MomentsEntry:
            return 0, 0, encode_moments(entry.moments)
        try:
            if self.codec is not None:
                cflags, parts = encode_codec(self.codec, key, entry[0])
                return FLAG_CODEC, cflags, parts
            form, parts = encode_value(entry[0], start)
            return form, 0, parts
        except SerdeError as exc:
            raise SerdeError(f"entry under {key!r}: {exc}") from exc

    def _compress(self, parts: list[Any], raw: int) -> list[Any] | None:
        return None if raw < self.compress_min else compress(parts, raw)

    def _seal(self, key: bytes, parts: Sequence[Any]) -> bytes:
        """The trailer over ``header | body``: an xxh3-128 digest, or an HMAC that also
        covers the key's bytes."""
        if self._mac is not None:
            mac = self._mac.copy()
            for part in parts:
                mac.update(part)
            mac.update(key)
            return mac.digest()
        if len(parts) == 1:
            return _xxh(parts[0])
        digest = xxhash.xxh3_128()
        for part in parts:
            digest.update(part)
        return digest.digest()

    def _signed(self, key: str, data: bytes, end: int) -> bool:
        mac = self._mac.copy()  # type: ignore[union-attr]
        mac.update(data[:end])
        mac.update(key.encode())
        return hmac.compare_digest(mac.digest(), data[end:])

    # -- reading ---------------------------------------------------------------------------------
    def hit(self, key: str, data: bytes) -> tuple[Any, float, float, int, int, int] | None:
        """``(value, compute seconds, created, body start, identity length, label length)``
        of a small value entry of the default codec, verified, or None when the entry is not
        of that shape (then ``loads``'s general path says what is wrong). Raises
        ``SerdeError`` like ``loads``.

        The one parser of small entries, behind ``loads`` too, and the hit path's own decoder:
        the common hit is a float or a small pickle, and a hit needs neither the ``Meta``
        object nor the entry tuple, which together cost as much as everything else here (a
        caller reads the first two fields). One function, not a parser behind a decoder: a
        Python call is a tenth of it.
        """
        try:
            if not self._fast or type(data) is not bytes:
                return None
            prefix = data[:4]
            is_float = prefix == self._float_prefix
            if not (is_float or prefix == self._pickle_prefix) or len(data) <= _HEAD:
                return None
            kind, lid, lfn, largs, res, cflags, created, seconds, blen, raw = _after_flags(data)
            hend = _HEAD + lid + lfn + largs
            end = hend + blen
            if (
                kind == 1
                and end + self._check == len(data)
                and raw == blen < 4096
                and not (res or cflags)
                and (lid == 16 or not lid)
                and data[48:64] == _xxh(key.encode())
                and (
                    _xxh(data[:end]) == data[end:]
                    if self._mac is None
                    else self._signed(key, data, end)
                )
                and 0.0 <= seconds < _INF
                and -_INF < created < _INF
                and (blen == 8 or not is_float)
            ):
                value = _f64(data, hend)[0] if is_float else _unpickle(data[hend:end])
                return value, seconds, created, hend, lid, lfn
            return None
        except Exception as exc:  # whatever a payload does on decode, it is a bad entry
            raise _undecodable(key, exc) from exc

    def loads(self, key: str, data: bytes | bytearray | memoryview) -> Entry:
        try:
            small = self.hit(key, data)  # type: ignore[arg-type]  # None for anything not bytes
            if small is None:
                return self._loads(key, data)
            value, seconds, created, hend, lid, lfn = small
            at = _HEAD + lid
            raw = cast(bytes, data)  # hit accepts bytes only
            meta = make_meta(
                raw[at : at + lfn].decode(), created, seconds, raw[_HEAD:at], raw[at + lfn : hend]
            )
            return _tuple_new(ValueEntry, (value, meta))
        except SerdeError:
            raise
        except Exception as exc:  # whatever a payload does on decode, it is a bad entry
            raise _undecodable(key, exc) from exc

    def _loads(self, key: str, data: Any) -> Entry:
        kind, meta, flags, cflags, body, writable = self._open(key, data)
        try:
            if kind == "moments":
                return MomentsEntry(decode_moments(body), meta)
            if flags & FLAG_CODEC:
                if self.codec is None:
                    raise SerdeError("written with a custom codec; this reader has none")
                return ValueEntry(decode_codec(self.codec, key, body, cflags), meta)
            if self.codec is not None:  # a codec is often chosen to avoid pickle: honour that
                raise SerdeError("a pickle; this reader uses a custom codec")
            return ValueEntry(decode_value(flags & _PAYLOAD_FLAGS, body, writable), meta)
        except SerdeError as exc:
            raise _undecodable(key, exc) from exc

    def read_meta(self, key: str, data: bytes | bytearray | memoryview) -> tuple[Kind, Meta, int]:
        """``(kind, meta, payload size)`` of a verified entry, without decoding its payload.

        The payload size is the decoded (decompressed) size; the stored size is ``len(data)``.
        """
        try:
            kind, meta, _, raw = self._header(key, data)[:4]
        except SerdeError:
            raise
        except Exception as exc:
            raise _undecodable(key, exc) from exc
        return kind, meta, raw

    def verify(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Everything ``loads`` checks except running pickle or the codec on the payload:
        the digest or HMAC, the header, decompression, moments, the buffer table."""
        try:
            kind, _, flags, _, body, _ = self._open(key, data)
        except SerdeError:
            raise
        except Exception as exc:
            raise _undecodable(key, exc) from exc
        try:
            if kind == "moments":
                decode_moments(body)
            elif flags & FLAG_BUFFERS:
                split_buffers(body, True)
        except Exception as exc:
            raise _undecodable(key, exc) from exc

    def _header(self, key: str, data: Any) -> tuple[Kind, Meta, int, int, int, memoryview, int]:
        """Parse and verify: ``(kind, meta, flags, payload size, codec flags, body, where the
        body starts)``. Every length is checked against the data before it is used."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerdeError(f"entry under {key!r} is not an expcache envelope (not bytes)")
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) < _HEAD or bytes(view[:2]) != MAGIC:
            raise SerdeError(f"entry under {key!r} is not an expcache envelope")
        (_, version, flags, code, lid, lfn, largs, res, cflags, created, seconds, blen, raw,
         digest) = _FIXED.unpack_from(view)
        if version != FORMAT_VERSION:
            raise SerdeError(
                f"entry under {key!r} has envelope format {version}, expected {FORMAT_VERSION}"
            )
        if flags & ~_KNOWN_FLAGS:
            raise SerdeError(f"entry under {key!r} has unknown flags {flags:#04x}")
        if self.signing_key and not flags & FLAG_SIGNED:
            raise SignatureError(f"entry under {key!r} is not signed; signing is required")
        if not self.signing_key and flags & FLAG_SIGNED:
            raise SignatureError(
                f"entry under {key!r} is signed but no signing key is configured "
                f"(set {ENV_SIGNING_KEY} like the writer did)"
            )
        kind = _KINDS.get(code)
        payload = flags & _PAYLOAD_FLAGS
        if (
            kind is None
            or res
            or lid not in (0, 16)
            or payload & (payload - 1)  # more than one payload form
            or (kind == "moments" and payload)
            or (cflags and not payload & FLAG_CODEC)
            or (payload & FLAG_FLOAT and raw != _F64_SIZE)
        ):
            raise SerdeError(f"entry under {key!r} has a malformed header")
        hend = _HEAD + lid + lfn + largs
        if hend + blen + self._check != len(view):
            raise SerdeError(
                f"entry under {key!r} is {len(view)} bytes, "
                f"its header declares {hend + blen + self._check}"
            )
        if raw > self.max_size or (not flags & FLAG_ZLIB and raw != blen):
            raise SerdeError(
                f"entry under {key!r} declares a payload of {raw} bytes "
                f"(max_size={self.max_size}, stored {blen})"
            )
        keyb = key.encode()
        if digest != _xxh(keyb):
            raise SerdeError(f"entry under {key!r} was written for another key")
        if not hmac.compare_digest(self._seal(keyb, (view[: -self._check],)), view[-self._check :]):
            if self.signing_key:
                raise SignatureError(f"entry under {key!r} has an invalid signature")
            raise SerdeError(f"entry under {key!r} is corrupt (digest mismatch)")
        if not (0.0 <= seconds < _INF and -_INF < created < _INF):
            raise SerdeError(f"entry under {key!r}: created={created!r}, seconds={seconds!r}")
        at = _HEAD + lid
        meta = make_meta(
            str(view[at : at + lfn], "utf-8"), created, seconds, bytes(view[_HEAD:at]),
            bytes(view[at + lfn : hend]),
        )
        return kind, meta, flags, raw, cflags, view[hend : hend + blen], hend

    def _open(self, key: str, data: Any) -> tuple[Kind, Meta, int, int, memoryview, bool]:
        """The verified header and the payload: ``(kind, meta, flags, codec flags, body,
        writable)``; decompressed (bounded) into a fresh, aligned buffer when needed."""
        kind, meta, flags, raw, cflags, body, start = self._header(key, data)
        if not flags & FLAG_ZLIB:
            return kind, meta, flags, cflags, body, not body.readonly
        return kind, meta, flags, cflags, inflate(key, body, raw, start % ALIGN), True


def _undecodable(key: str, exc: Exception) -> SerdeError:
    detail = exc if isinstance(exc, SerdeError) else f"cannot be decoded: {exc!r}"
    return SerdeError(f"entry under {key!r}: {detail}")
