"""What the Ray tests run inside Ray tasks (importable by name on every node).

Each task reports where it ran (node id, host name) next to what it computed, so a test
asserts the placement it asked for instead of assuming it.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from expcache import Memoized


def utility(subset: tuple[int, ...], scale: float = 1.0) -> float:
    """A deterministic stand-in for an expensive utility."""
    return scale * sum((i + 1) ** 0.5 for i in subset) / (1 + len(subset))


def where() -> tuple[str, str]:
    import ray

    return ray.get_runtime_context().get_node_id(), socket.gethostname()


def evaluate(memo: Memoized[..., float], subsets: list[tuple[int, ...]]) -> dict[str, Any]:
    """Call the memoized function (shipped to this task by pickling) on every subset."""
    values = [memo(s) for s in subsets]
    node, host = where()
    return {"node": node, "host": host, "values": values, "stats": memo.stats.as_dict()}


def read_flag(flag: Any, want: bool, seconds: float = 60.0) -> dict[str, Any]:
    """Poll a pyDVL-style stop flag in a task (as pyDVL's workers do between samples) until it
    reads ``want`` or ``seconds`` pass; the value read last, and where."""
    deadline = time.monotonic() + seconds
    value = bool(flag())
    while value != want and time.monotonic() < deadline:
        time.sleep(0.005)
        value = bool(flag())
    node, host = where()
    return {"value": value, "node": node, "host": host}
