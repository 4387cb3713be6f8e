"""Following functions and classes that refer to each other, with start-independent digests.

A function's identity follows the functions and classes it refers to, and a class's digest
its methods, so the walk is a graph walk: recursion, a method naming its own class, a class
whose method calls a helper that builds the class. A node being walked is written as a
back-reference by name when it is met again. That alone makes a digest depend on where the
walk started (A-seen-from-B differs from A-seen-from-A), and a cache of class digests would
then make keys depend on which class a process happened to meet first.

So each strongly connected set of nodes (found as in Tarjan's algorithm, during the walk) is
made canonical once it is complete: every member is re-encoded in a fresh walk that writes
*all* members as back-references by name, and each member's digest is derived from the
sorted encodings of the whole set. A node that is not the root of its set while walked
returns a provisional value that only its root's discarded first pass uses. Cached digests of
a set's members are not read while a member is being walked (then the provisional value is
what a fresh process computes too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .encode import Ctx, H, qualname, s

__all__ = ["Kind", "Result", "node"]

Content = Callable[[Any, Ctx], bytes]


class Kind(NamedTuple):
    """How one kind of node is written: ``tag`` + name + digest, or ``backref`` + name."""

    tag: bytes
    backref: bytes
    content: Content


class Result(NamedTuple):
    value: bytes
    final: bool  # the same from any starting point: may be cached
    members: tuple[Any, ...] = ()  # a canonical cycle: every member
    refs: tuple[bytes, ...] = ()  # ... and each one's value
    ids: frozenset[int] = frozenset()


def node(obj: Any, ctx: Ctx, kind: Kind, kinds: Callable[[Any], Kind]) -> Result:
    """Encode ``obj`` (a function or class of the user's code) within the walk ``ctx``."""
    walk = ctx.walk()
    st = walk.state
    assert st is not None
    name = s(qualname(obj))
    key = id(obj)
    depth = st.frames.get(key)
    if depth is not None or (st.cycle is not None and key in st.cycle):
        if depth is not None and depth < st.low[-1]:
            st.low[-1] = depth
        return Result(kind.backref + name, False)
    mark = len(st.open)
    depth = len(st.low)
    st.frames[key] = depth
    st.low.append(depth)
    st.open.append(obj)
    done = False
    try:
        digest = kind.content(obj, walk)
        done = True
    finally:
        del st.frames[key]
        low = st.low.pop()
        if st.low and low < st.low[-1]:
            st.low[-1] = low
        if not done:
            del st.open[mark:]
    if low < depth:  # part of a cycle whose root is further up: provisional
        return Result(kind.tag + name + digest, False)
    members = tuple(st.open[mark:])
    del st.open[mark:]
    if len(members) == 1:
        return Result(kind.tag + name + digest, True)
    return _canonical(obj, members, walk, kinds)


def _canonical(
    root: Any, members: tuple[Any, ...], ctx: Ctx, kinds: Callable[[Any], Kind]
) -> Result:
    ids = frozenset(id(m) for m in members)
    encoded = []
    for m in members:
        sub = ctx.walk(cycle=ids)  # members by name only: nothing depends on the start
        encoded.append(s(qualname(m)) + kinds(m).content(m, sub))
    whole = H(b"".join(sorted(encoded)))
    refs = tuple(kinds(m).tag + s(qualname(m)) + H(whole + s(qualname(m))) for m in members)
    return Result(refs[members.index(root)], True, members, refs, ids)


def enter(ctx: Ctx, obj: Any) -> int:
    """Open ``obj`` as a frame without making it a node (the function a KeyMaker wraps: its
    identity is its parts, not a digest other nodes embed); returns the open-stack mark."""
    st = ctx.state
    assert st is not None
    mark = len(st.open)
    st.frames[id(obj)] = len(st.low)
    st.low.append(len(st.low))
    st.open.append(obj)
    return mark


def leave(ctx: Ctx, obj: Any, mark: int) -> None:
    st = ctx.state
    assert st is not None
    del st.frames[id(obj)]
    st.low.pop()
    del st.open[mark:]
