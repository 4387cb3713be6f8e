"""The tasks the app ships, and the schemas of their config groups.

A task is a class whose constructor takes the ``task`` node's options (its signature *is* the
task's schema) and checks them, dry-building whatever else the task is configured with; its
instances are called with ``ctx`` (a ``CacheContext``), ``output_dir`` and ``seed`` and return
plain data. A function ``f(*, ctx, output_dir, seed, **options)`` is a task too: the plan binds
its options to its signature, and ``run`` calls it. Heavy libraries are imported when a task
is checked or run, never when its schemas are registered (``--help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..schemas import Schema

__all__ = ["task_schemas"]


def task_schemas() -> list[Schema]:
    """Every task package lists its own schemas; adding a task adds one line here."""
    from . import demo, valuation

    return [*demo.schemas(), *valuation.schemas()]
