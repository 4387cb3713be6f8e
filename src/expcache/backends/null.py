"""A backend that stores nothing: caching switched off behind the same interface."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Backend

__all__ = ["NullBackend"]


class NullBackend(Backend):
    """Every lookup misses and every store is dropped; the memoizer short-circuits on it."""

    name: ClassVar[str] = "none"
    shared: ClassVar[bool] = False

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes, expire: float = 0) -> None:
        return None

    def add(self, key: str, value: bytes, expire: float = 0) -> bool:
        return True

    def gets(self, key: str) -> tuple[bytes | None, Any]:
        return None, None

    def cas(self, key: str, value: bytes, token: Any, expire: float = 0) -> bool | None:
        return True

    def touch(self, key: str, expire: float) -> bool:
        return False

    def incr(self, key: str, delta: int = 1) -> int:
        return delta

    def delete(self, key: str) -> None:
        return None

    def clear(self) -> None:
        return None
