"""zlib for envelopes: a cheap decision whether to compress, and bounded decompression.

Compression is level 1 and kept only when it saves an eighth; bodies over 256 KiB are sampled
first (four 4 KiB windows), so incompressible data (random floats) costs ~0.1 ms instead of
a full attempt at ~40 MB/s. Decompression never produces more than the payload size the
envelope declares (itself bounded by ``max_size``): a zlib bomb allocates nothing more.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

from .errors import SerdeError

__all__ = ["compress", "inflate"]

_SAMPLE: Final = 4 * 1024
_SAMPLE_FROM: Final = 256 * 1024  # larger bodies are sampled before a compression attempt
_INFLATE_IN: Final = 1 << 16
_INFLATE_OUT: Final = 1 << 18


def compress(parts: list[Any], raw: int) -> list[Any] | None:
    """The compressed parts, or None when compressing would not pay."""
    if raw > _SAMPLE_FROM:  # four 4 KiB windows of the largest part decide (~0.1 ms)
        big = memoryview(max(parts, key=len))
        step = (len(big) - _SAMPLE) // 3
        sample = b"".join(big[i * step : i * step + _SAMPLE] for i in range(4))
        if len(zlib.compress(sample, 1)) > len(sample) - len(sample) // 8:
            return None
    compressor = zlib.compressobj(1)
    packed = [compressor.compress(part) for part in parts]
    packed.append(compressor.flush())
    return packed if sum(map(len, packed)) <= raw - raw // 8 else None


def inflate(key: str, body: memoryview, raw: int, lead: int) -> memoryview:
    """Decompress exactly ``raw`` bytes (already checked against ``max_size``) into a buffer
    placed like the body would be in an envelope, so out-of-band arrays stay aligned.

    Input goes in slices and output comes out at most ``raw`` bytes in all, so neither a bomb
    nor a long stream costs more than the declared size plus a chunk (zlib's
    ``unconsumed_tail`` is a copy: feeding the whole body would copy it once per chunk).
    """
    out = bytearray(lead + raw)
    inflater = zlib.decompressobj()
    pos, end = lead, lead + raw
    for at in range(0, len(body), _INFLATE_IN):
        pending: Any = body[at : at + _INFLATE_IN]
        while pending and not inflater.eof:
            room = end - pos
            piece = inflater.decompress(pending, min(room, _INFLATE_OUT) or 1)  # 0 = unbounded
            if len(piece) > room:
                raise SerdeError(f"entry under {key!r}: compressed payload longer than declared")
            out[pos : pos + len(piece)] = piece
            pos += len(piece)
            pending = inflater.unconsumed_tail
        if inflater.eof:
            if inflater.unused_data or at + _INFLATE_IN < len(body):
                raise SerdeError(f"entry under {key!r}: bytes after the compressed payload")
            break
    if not inflater.eof or pos != end:
        raise SerdeError(f"entry under {key!r}: compressed payload shorter than declared")
    return memoryview(out)[lead:]
