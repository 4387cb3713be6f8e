"""A module-level function decorated in place, as users write it (pickles by reference)."""

from __future__ import annotations

from expcache import MemoryBackend, memoize


@memoize(backend=MemoryBackend())
def cube(x: int) -> int:
    return x**3
