"""A backend that stores nothing: caching switched off behind the same interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from .base import Backend, Data, Scope

__all__ = ["NullBackend"]


class NullBackend(Backend):
    """Every lookup misses and every store is dropped; the memoizer short-circuits on it."""

    name: ClassVar[str] = "none"
    scope: ClassVar[Scope] = "process"

    def get(self, key: str) -> Data | None:
        return None

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        return None

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        return True

    def gets(self, key: str) -> tuple[Data | None, Any]:
        return None, None

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        return True

    def touch(self, key: str, expire: float) -> bool:
        return False

    def incr(self, key: str, delta: int = 1) -> int:
        return delta

    def delete(self, key: str) -> None:
        return None

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        return iter(())

    def delete_many(self, keys: Iterable[str]) -> int:
        return 0

    def clear(self, prefix: str | None = None) -> int:
        return 0

    def server_stats(self) -> dict[str, Any]:
        return {"backend": self.name, "items": 0, "bytes": 0}

    def probe(self) -> list[tuple[str, str]]:
        return []
