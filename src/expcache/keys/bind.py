"""Signature binding: one call's ``(args, kwargs)`` -> the values of the parameters.

``f(1)``, ``f(1, b=2)`` and ``f(b=2, a=1)`` must be one key, so arguments are bound to the
signature once, with defaults applied. The signature is analysed when the KeyMaker is built,
so a call costs a dict lookup per keyword (nothing at all when every parameter is given
positionally). ``inspect.Signature.bind`` is not used: it is about ten times slower.

``ignore_args`` drops parameters however they were passed. A name the function does not
have is accepted (pyDVL 0.7 passes ``ignore_args=["job_id", "run_id"]`` to functions that
take ``**kwargs`` or never receive them): it is logged at DEBUG, and when such a name arrives
as a keyword it is dropped before binding -- from ``**kwargs``, or, for a function without
``**kwargs``, left for the function itself to reject when it runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Binder"]

log = logging.getLogger("expcache")
_MISSING: Any = object()


class Binder:
    """The parameters of one callable: names, defaults, what is ignored, how to bind."""

    def __init__(self, fn: Callable[..., Any], ignore_args: tuple[str, ...], name: str) -> None:
        self.name = name
        P = inspect.Parameter
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # no introspectable signature: key the raw call
            self.bindable = False
            self.varargs: str | None = "*args"
            self.varkw: str | None = "**kwargs"
            params = []
        else:
            self.bindable = True
            self.varargs = next((p.name for p in params if p.kind == P.VAR_POSITIONAL), None)
            self.varkw = next((p.name for p in params if p.kind == P.VAR_KEYWORD), None)
        slots = [p for p in params if p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
        self.names = [p.name for p in slots]
        self.n_pos = sum(p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for p in slots)
        self._kw_index = {p.name: i for i, p in enumerate(slots) if p.kind != P.POSITIONAL_ONLY}
        self._defaults = [_MISSING if p.default is P.empty else p.default for p in slots]
        self.ignored = frozenset(ignore_args)
        known = {p.name for p in params}
        for unknown in sorted(self.ignored - known):
            log.debug(
                "ignore_args: %s() has no parameter %r; %s",
                name,
                unknown,
                "dropped from **kwargs when passed" if self.varkw else "it never enters the key",
            )
        # Ignored names that are not slots can only arrive as keywords: dropped before binding.
        self.kw_drop = self.ignored - set(self.names)
        self.keep = [i for i, n in enumerate(self.names) if n not in self.ignored]
        self.keep_varargs = self.varargs is not None and self.varargs not in self.ignored
        self.keep_varkw = self.varkw is not None and self.varkw not in self.ignored
        # A method's first parameter: Memoized as a descriptor passes the instance there.
        self.method = (
            inspect.isfunction(fn)
            and bool(slots)
            and slots[0].name == "self"
            and slots[0].kind != P.KEYWORD_ONLY
        )
        # Calls with exactly this many positional arguments and no keywords need no binding.
        self.n_fast = len(self.names) if self.bindable and self.n_pos == len(self.names) else -1

    def bind(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...] | list[Any], tuple[Any, ...], dict[str, Any]]:
        """(values of the named parameters, extra positional, extra keyword arguments)."""
        drop = self.kw_drop
        if not self.bindable:
            return [], tuple(args), {k: v for k, v in kwargs.items() if k not in drop}
        n_pos = self.n_pos
        if not kwargs and len(args) == n_pos == len(self.names):
            return args, (), {}  # every parameter given positionally: nothing to bind
        extra: tuple[Any, ...] = ()
        if len(args) > n_pos:
            if self.varargs is None:
                raise TypeError(
                    f"{self.name}() takes {n_pos} positional arguments but {len(args)} were given"
                )
            extra, args = args[n_pos:], args[:n_pos]
        values = [*args, *[_MISSING] * (len(self.names) - len(args))]
        extra_kw: dict[str, Any] = {}
        for k, v in kwargs.items():
            i = self._kw_index.get(k)
            if i is None:
                if k in drop:
                    continue
                if self.varkw is None:
                    raise TypeError(f"{self.name}() got an unexpected keyword argument {k!r}")
                extra_kw[k] = v
            elif values[i] is not _MISSING:
                raise TypeError(f"{self.name}() got multiple values for argument {k!r}")
            else:
                values[i] = v
        for i, v in enumerate(values):
            if v is _MISSING:
                if self._defaults[i] is _MISSING:
                    raise TypeError(self._missing(i))
                values[i] = self._defaults[i]
        return values, extra, extra_kw

    def _missing(self, i: int) -> str:
        text = f"{self.name}() missing required argument {self.names[i]!r}"
        if self.method and i == 0:
            text += " (a method: call it on an instance, or pass the instance first)"
        return text
