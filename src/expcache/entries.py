"""Typed cache entries (placeholder of the lead's branch; replaced by the serde work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .policy import Moments

__all__ = ["Entry", "Meta", "MomentsEntry", "ValueEntry"]


@dataclass(frozen=True, slots=True)
class Meta:
    function: str = ""
    created: float = 0.0
    seconds: float = 0.0
    identity: bytes = b""
    args: bytes = b""


class ValueEntry(NamedTuple):
    value: Any
    meta: Meta


class MomentsEntry(NamedTuple):
    moments: Moments
    meta: Meta


Entry = ValueEntry | MomentsEntry
