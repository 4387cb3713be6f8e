"""The type tag table of expcache.keys.tags: one table, unique tags, and the encoders use it.

A tag byte reused for two meanings (format 2 had ``g`` for both a global and a timedelta,
``I`` for both a big int and a callable instance) lets two different values write the same
bytes; these tests make that impossible to reintroduce silently.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expcache.keys import encode as E
from expcache.keys import tags

KEYS_DIR = Path(E.__file__).parent
ENCODERS = tuple(p.name for p in sorted(KEYS_DIR.glob("*.py")) if p.name != "tags.py")
TABLE = tags.table()


def _doc_rows() -> dict[str, bytes]:
    doc = tags.__doc__ or ""
    rows = re.findall(r"^(\S)\s{3,}([A-Z_]+)\s{2,}\S", doc, flags=re.MULTILINE)
    return {name: tag.encode("ascii") for tag, name in rows}


def _module_tree(name: str) -> ast.Module:
    return ast.parse((KEYS_DIR / name).read_text(encoding="utf-8"))


def _tag_references() -> set[str]:
    """Every ``T.NAME`` the encoding modules read (they import tags as T)."""
    found: set[str] = set()
    for name in ENCODERS:
        for node in ast.walk(_module_tree(name)):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "T"
            ):
                found.add(node.attr)
    return found


def test_tags_are_single_unique_bytes() -> None:
    assert len(TABLE) >= 60
    assert all(len(tag) == 1 for tag in TABLE.values())
    by_tag: dict[bytes, list[str]] = {}
    for name, tag in TABLE.items():
        by_tag.setdefault(tag, []).append(name)
    assert {t: n for t, n in by_tag.items() if len(n) > 1} == {}


def test_docstring_table_is_the_table() -> None:
    # The docstring is the documentation: every constant has its row, with its byte.
    assert _doc_rows() == TABLE


def test_every_tag_the_encoders_use_is_in_the_table_and_every_row_is_used() -> None:
    used = _tag_references()
    assert used - TABLE.keys() == set()
    assert TABLE.keys() - used == set()  # no dead rows


def test_encoders_write_no_tag_bytes_of_their_own() -> None:
    # Tags come from the table only: the sole bytes literal allowed is b"" (for joins).
    literals = {
        (name, node.value)
        for name in ENCODERS
        for node in ast.walk(_module_tree(name))
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value
    }
    assert literals == set()


class _Stateless:
    pass


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "NONE"),
        (False, "FALSE"),
        (np.True_, "TRUE"),
        (7, "INT"),
        (np.int32(7), "INT"),
        (2**70, "BIGINT"),
        (1.5, "FLOAT"),
        ("x", "STR"),
        (b"x", "BYTES"),
        ((1,), "TUPLE"),
        ({1: 2}, "DICT"),
        ({"a": 1}, "STR_KEY_DICT"),
        (OrderedDict(a=1), "ORDERED_DICT"),
        ({1, 2}, "INT_SET"),
        ({1.5}, "SET"),
        (frozenset({"a"}), "FROZENSET"),
        (dt.timedelta(1), "TIMEDELTA"),
        (re.compile("a+"), "PATTERN"),
        (list[int], "ANNOTATION"),
        (np.arange(3), "ARRAY"),
        (np.float32(1), "NUMPY_SCALAR"),
        (np.random.SeedSequence(1), "SEED_SEQUENCE"),
        (np.random.default_rng(1), "GENERATOR"),
        (np.random.PCG64(1), "BIT_GENERATOR"),
        (np.random.RandomState(1), "RANDOM_STATE"),
        (int, "TYPE_NAME"),
        (_Stateless, "CLASS"),
        (_Stateless(), "STATELESS"),
        (len, "NAMED_CALLABLE"),
        (lambda: 1, "FUNCTION"),
        (np, "MODULE"),
    ],
)
def test_a_value_starts_with_its_documented_tag(value: Any, name: str) -> None:
    out: list[bytes] = []
    E.encode(value, out, E.Ctx(False))
    assert b"".join(out)[:1] == TABLE[name]
