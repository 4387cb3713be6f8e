"""A memoized function used as a method: ``obj.method`` binds the instance.

``Memoized.__get__`` returns one of these, like a function's bound method: calls and the
per-call operations pass the instance as the first argument (so it is part of the key:
``__cache_key__()`` when its class has one), everything else reads through to the
memoized function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .explain import Explanation
    from .memoize import Memoized
    from .policy import Moments

__all__ = ["BoundMemoized"]


class BoundMemoized:
    """A memoized function bound to an instance: ``obj.method`` of a memoized method."""

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: Memoized[..., Any], instance: Any) -> None:
        self.__func__ = func
        self.__self__ = instance

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return self.__func__.cache_key(self.__self__, *args, **kwargs)

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        return self.__func__.check_call_in_cache(self.__self__, *args, **kwargs)

    def moments(self, *args: Any, **kwargs: Any) -> Moments | None:
        return self.__func__.moments(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        self.__func__.invalidate(self.__self__, *args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        return self.__func__.explain(self.__self__, *args, **kwargs)

    def precache(self, value: Any, *args: Any, **kwargs: Any) -> None:
        self.__func__.precache(value, self.__self__, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.refresh(self.__self__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func__, name)

    def __reduce__(self) -> Any:
        return getattr, (self.__self__, self.__func__.fn.__name__)

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {self.__self__!r}>"


