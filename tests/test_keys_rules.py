"""The rules a user meets: ignore_args, pickle_args, closures/globals/defaults, methods.

Each test reproduces a case from issue 13 that format 2 got wrong or refused: pyDVL 0.7's
``ignore_args=["job_id", "run_id"]`` on functions without those names, a hint naming an
option that did not exist, a closure over a numpy Generator refused while the same global
was accepted by type, and methods whose ``self`` could not be keyed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
from typing import Any

import numpy as np
import pytest

from expcache.errors import ConfigError, KeyEncodingError
from expcache.keys import KeyMaker, function_identity


def build(src: str, name: str = "f", **globals_: Any) -> Any:
    ns: dict[str, Any] = {"__name__": "generated", **globals_}
    exec(compile(src, "<generated>", "exec", dont_inherit=True), ns)
    return ns[name]


class Opaque:
    def __init__(self, v: int) -> None:
        self.v = v


# ------------------------------------------------------------------------------ ignore_args
def map_reduce_job(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


def train(x: int, seed: int = 0) -> int:
    return x + seed


def test_ignore_args_as_pydvl_0_7_passes_it() -> None:
    job = KeyMaker(map_reduce_job, ignore_args=["job_id", "run_id"])
    assert job((1,), {"job_id": 3, "run_id": "a", "n": 2}) == job((1,), {"n": 2})
    assert job((1,), {"n": 2}) != job((1,), {"n": 3})
    fit = KeyMaker(train, ignore_args=["job_id", "run_id"])  # format 2: ConfigError
    assert fit((1,), {"seed": 2}) == fit((1, 2), {}) != fit((1,), {})
    # A name the function cannot take is left out of the key; the call itself rejects it.
    assert fit((1,), {"job_id": 9}) == fit((1,), {})


def test_one_string_is_one_name_and_names_are_checked() -> None:
    km = KeyMaker(train, ignore_args="seed")
    assert km.ignore_args == ("seed",)
    assert km((1, 2), {}) == km((1, 3), {})
    for bad in ([1], [""], "not a name", 3):
        with pytest.raises(ConfigError) as err:
            KeyMaker(train, ignore_args=bad)
        assert err.value.param == "ignore_args"


def test_unknown_ignore_args_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="expcache"):
        KeyMaker(map_reduce_job, ignore_args=["job_id"])
        KeyMaker(train, ignore_args=["run_id", "seed"])
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "expcache"]
    assert [level for level, _ in messages] == [logging.DEBUG, logging.DEBUG]
    assert "'job_id'" in messages[0][1] and "**kwargs" in messages[0][1]
    assert "'run_id'" in messages[1][1] and "train" in messages[1][1]


def test_varargs_and_varkw_can_be_ignored_by_their_names() -> None:
    km = KeyMaker(map_reduce_job, ignore_args=["kwargs"])
    assert km((1,), {"a": 1}) == km((1,), {"a": 2}) != km((2,), {})


# ------------------------------------------------------------------------------ pickle_args
def takes(a: Any, b: Any = None) -> Any:
    return a


def test_pickle_args_values_are_checked() -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError) as err:
            KeyMaker(takes, pickle_args=bad)  # type: ignore[arg-type]
        assert err.value.param == "pickle_args"


def test_pickle_args_true_is_silent_and_warn_warns_once_per_argument() -> None:
    silent = KeyMaker(takes, pickle_args=True)
    loud = KeyMaker(takes, pickle_args="warn")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        k1 = silent((Opaque(1),), {})
        assert seen == []
        assert loud((Opaque(1),), {}) == k1  # the same key as pickle_args=True
        loud((Opaque(2),), {})
        loud((Opaque(2),), {"b": Opaque(3)})
        loud((1,), {})
        KeyMaker(takes, pickle_args="warn")((Opaque(1),), {})  # another memoized function
    messages = [str(w.message) for w in seen]
    assert len(messages) == 3
    assert "argument 'a' of takes()" in messages[0] and "pickle" in messages[0]
    assert "argument 'b' of takes()" in messages[1]
    assert "argument 'a'" in messages[2]
    assert loud((Opaque(1),), {}) != loud((Opaque(2),), {})
    # canonical arguments key alike in every mode (the warn mode's strict first try)
    assert loud((1, [2.5, "x"]), {}) == silent((1, [2.5, "x"]), {}) == KeyMaker(takes)(
        (1, [2.5, "x"]), {}
    )


def test_pickle_args_warn_names_varargs_and_varkw_apart() -> None:
    km = KeyMaker(map_reduce_job, pickle_args="warn")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        km((Opaque(1),), {"k": Opaque(2)})
    names = [str(w.message).split(" has ")[0] for w in seen]
    assert names == [
        "expcache: argument 'args' of map_reduce_job()",
        "expcache: argument 'kwargs' of map_reduce_job()",
    ]


def test_pickle_args_warn_names_a_pickled_global() -> None:
    f = build("def f(x):\n    return CLIENT.v + x\n", CLIENT=Opaque(1))
    with pytest.warns(UserWarning, match=r"global CLIENT of f\(\)"):
        KeyMaker(f, pickle_args="warn")((1,), {})


# ------------------------------------------------------------------------------ closures, globals
def _over(value: Any) -> Any:
    def f(x: Any) -> Any:
        return value, x

    return f


GLOBAL_SRC = "def f(x):\n    return VALUE, x\n"


def test_closures_and_globals_follow_one_rule_for_a_numpy_generator() -> None:
    # Format 2: the closure raised at the first call, the global was keyed by its type only.
    r1, r2 = np.random.default_rng(1), np.random.default_rng(2)
    assert function_identity(_over(r1)) != function_identity(_over(r2))
    g1, g2 = build(GLOBAL_SRC, VALUE=r1), build(GLOBAL_SRC, VALUE=r2)
    assert function_identity(g1) != function_identity(g2)
    assert function_identity(g1) == function_identity(
        build(GLOBAL_SRC, VALUE=np.random.default_rng(1))
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: logging.getLogger("expcache.test"),
        lambda: logging.LoggerAdapter(logging.getLogger("x"), {}),
        threading.Lock,
        threading.RLock,
        threading.Condition,
        threading.Event,
        threading.Semaphore,
        threading.BoundedSemaphore,
        lambda: threading.Barrier(2),
        threading.local,
    ],
    ids=lambda m: getattr(m, "__name__", "?"),
)
def test_objects_that_do_not_affect_results_count_by_type(make: Any) -> None:
    a, b = build(GLOBAL_SRC, VALUE=make()), build(GLOBAL_SRC, VALUE=make())
    assert function_identity(a) == function_identity(b)
    assert function_identity(_over(make())) == function_identity(_over(make()))


def test_anything_else_raises_at_first_call_naming_the_variable() -> None:
    g = build(GLOBAL_SRC, VALUE=Opaque(1))
    km = KeyMaker(g)  # decoration never fails: the helpers may not exist yet
    with pytest.raises(KeyEncodingError) as err:
        km((1,), {})
    message = str(err.value)
    assert "global VALUE of f()" in message and "Opaque" in message
    for fix in ("__cache_key__()", "register_encoder", "pickle_args=True", "signature="):
        assert fix in message
    with pytest.raises(KeyEncodingError, match=r"closure variable value of .*f\(\)"):
        function_identity(_over(Opaque(1)))
    assert function_identity(_over(Opaque(1)), pickle_args=True) != function_identity(
        _over(Opaque(2)), pickle_args=True
    )
    assert KeyMaker(g, pickle_args=True)((1,), {}) == KeyMaker(g, pickle_args=True)((1,), {})


def test_a_container_global_names_where_inside_it() -> None:
    g = build(GLOBAL_SRC, VALUE={"db": [1, Opaque(1)]})
    with pytest.raises(KeyEncodingError, match=r"at \['db'\]\[1\] in global VALUE of f\(\)"):
        function_identity(g)


def test_defaults_follow_the_rule_too() -> None:
    lock = build("def f(x, lock=LOCK):\n    return x\n", LOCK=threading.Lock())
    assert len(function_identity(lock)) == 16
    opaque = build("def f(x, *, client=CLIENT):\n    return x\n", CLIENT=Opaque(1))
    with pytest.raises(KeyEncodingError, match=r"default of parameter client of f\(\)"):
        function_identity(opaque)


def test_attribute_names_are_not_globals() -> None:
    # ``x.client`` shares co_names with a global called ``client``; only loads count.
    f = build("def f(x):\n    return x.client\n", client=Opaque(1))
    g = build("def f(x):\n    return x.client\n", client=Opaque(2))
    assert function_identity(f) == function_identity(g)
    assert "global client" not in KeyMaker(f).manifest()


def test_modules_by_name_data_by_content() -> None:
    src = "def f(x):\n    return np.sum(x) * SCALE\n"
    a = build(src, np=np, SCALE=2.0)
    assert function_identity(a) == function_identity(build(src, np=np, SCALE=2.0))
    assert function_identity(a) != function_identity(build(src, np=np, SCALE=3.0))


# ------------------------------------------------------------------------------ methods
class Model:
    def __init__(self, w: float) -> None:
        self.w = w
        self.cache: dict[str, Any] = {}

    def predict(self, x: float) -> float:
        return self.w * x


class KeyedModel(Model):
    def __cache_key__(self) -> float:
        return self.w


@dataclasses.dataclass(frozen=True)
class Frozen:
    w: float

    def predict(self, x: float) -> float:
        return self.w * x


def test_a_method_is_recognised_by_its_first_parameter() -> None:
    assert KeyMaker(Model.predict).method
    assert not KeyMaker(train).method
    assert not KeyMaker(Model(1.0).predict).method  # already bound: self is in the identity


def test_self_is_keyed_by_cache_key() -> None:
    km = KeyMaker(KeyedModel.predict)
    a, b = KeyedModel(1.0), KeyedModel(1.0)
    b.cache["junk"] = object()
    assert km((a, 2.0), {}) == km((b, 2.0), {})
    assert km((a, 2.0), {}) != km((KeyedModel(2.0), 2.0), {})
    dc = KeyMaker(Frozen.predict)  # a dataclass self keys by its fields
    assert dc((Frozen(1.0), 2.0), {}) != dc((Frozen(2.0), 2.0), {})


def test_self_without_an_encoding_names_self_and_the_fix() -> None:
    km = KeyMaker(Model.predict)
    with pytest.raises(KeyEncodingError) as err:
        km((Model(1.0), 2.0), {})
    message = str(err.value)
    assert "'self' of method Model.predict()" in message
    assert "__cache_key__()" in message and "pickle_args=True" in message
    pickled = KeyMaker(Model.predict, pickle_args=True)
    assert pickled((Model(1.0), 2.0), {}) != pickled((Model(2.0), 2.0), {})
    with pytest.raises(TypeError, match="a method: call it on an instance"):
        km((), {"x": 2.0})
