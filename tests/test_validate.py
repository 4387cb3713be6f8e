"""The shared validators and the structured ConfigError every constructor raises."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from expcache import _validate as v
from expcache.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "kwargs"),
    [
        (-1, {"gt": 0}),
        (0, {"gt": 0}),
        (True, {"ge": 0}),
        ("1", {"ge": 0}),
        (math.nan, {"ge": 0}),
        (math.inf, {"ge": 0}),
        (11, {"ge": 0, "le": 10}),
        (None, {"ge": 0}),
    ],
)
def test_number_rejects(value: object, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as info:
        v.number("timeout", value, unit="seconds", **kwargs)
    assert info.value.param == "timeout"
    assert info.value.value is value or (value != value and info.value.value != info.value.value)
    assert str(info.value).startswith(f"timeout={value!r}: a number of seconds")


def test_number_accepts_and_normalises() -> None:
    assert v.number("t", 1, gt=0) == 1.0
    assert type(v.number("t", np.float32(0.5), gt=0)) is float
    assert v.number("t", None, allow_none=True) is None
    assert v.number("t", math.inf, ge=0, allow_inf=True) == math.inf


@pytest.mark.parametrize("value", [2.0, True, "3", -1, np.float64(2.0)])
def test_integer_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^n=.*: an integer >= 0$"):
        v.integer("n", value, ge=0)


def test_integer_accepts_numpy_and_none() -> None:
    assert v.integer("n", np.int64(3), ge=1) == 3
    assert v.integer("n", None, ge=1, allow_none=True) is None


def test_boolean_choice_text() -> None:
    assert v.boolean("strict", False) is False
    with pytest.raises(ConfigError, match="strict='false': true or false"):
        v.boolean("strict", "false")
    assert v.choice("channel", "file", ["auto", "file"]) == "file"
    with pytest.raises(ConfigError, match="one of 'auto', 'file'"):
        v.choice("channel", "disk", ["auto", "file"])
    with pytest.raises(ConfigError, match="one of 1, 2"):
        v.choice("x", True, [1, 2])
    assert v.text("ns", "a.b", pattern=r"[a-z.]*") == "a.b"
    with pytest.raises(ConfigError, match="ns='A B': at most"):
        v.text("ns", "A B", pattern=r"[a-z.]*", describe="at most 64 of [a-z.]")


def test_names_one_string_is_one_name() -> None:
    assert v.names("ignore_args", "job_id") == ("job_id",)
    assert v.names("ignore_args", ["a", "b", "a"]) == ("a", "b")
    assert v.names("ignore_args", None) == ()
    for bad in (5, ["ok", 3], ["not a name"], b"job"):
        with pytest.raises(ConfigError, match="ignore_args"):
            v.names("ignore_args", bad)


def test_config_error_parts_relocation_and_pickle() -> None:
    exc = ConfigError(param="timeout", value=-1, expected="a number > 0", hint="see the docs")
    assert str(exc) == "timeout=-1: a number > 0; see the docs"
    moved = exc.located("cache")
    assert (moved.param, moved.value, moved.expected) == ("cache.timeout", -1, "a number > 0")
    assert str(moved) == "cache.timeout=-1: a number > 0; see the docs"
    back = pickle.loads(pickle.dumps(moved))
    assert str(back) == str(moved) and back.param == "cache.timeout"
    free = ConfigError("something is off")
    assert str(free) == "something is off" and free.param is None
    assert str(free.located("cache")) == "cache: something is off"
    assert isinstance(exc, ValueError)


def test_secret_values_never_reach_the_message_or_a_pickle() -> None:
    exc = ConfigError(param="signing_key", value="hunter2", expected="at least 16 bytes", secret=True)
    assert "hunter2" not in str(exc)
    assert "hunter2" not in str(pickle.loads(pickle.dumps(exc)))
    assert b"hunter2" not in pickle.dumps(exc)
