"""Filtering and projection (spec §5.2), aggregate (spec §7 "Aggregates") and sort
(FHIRPath 2.1 sort(); a leading ``-`` on a key sorts descending)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ..collections_ import item_key, to_boolean
from ..compare import order
from ..env import Env, Fn
from ..nodes import Expr, Unary
from ..values import to_system
from .registry import function, special


@function("where", 1, lazy=True)
def where(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    (criteria,) = args
    out: list[Any] = []
    saved = env.index
    try:
        for i, item in enumerate(inp):
            env.index = i
            result = criteria([item], env)
            if result and to_boolean(result, "where()") is True:
                out.append(item)
    finally:
        env.index = saved
    return out


@function("select", 1, lazy=True)
def select(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    (projection,) = args
    out: list[Any] = []
    saved = env.index
    try:
        for i, item in enumerate(inp):
            env.index = i
            out.extend(projection([item], env))
    finally:
        env.index = saved
    return out


@function("repeat", 1, lazy=True)
def repeat(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    """Apply the projection until no new items appear (spec §5.2.4); items already seen are
    not projected again, which also stops cycles such as ``repeat('test')``."""
    (projection,) = args
    out: list[Any] = []
    seen: set[Any] = set()
    queue = inp
    saved = env.index
    try:
        while queue:
            next_queue: list[Any] = []
            for i, item in enumerate(queue):
                env.index = i
                for produced in projection([item], env):
                    key = item_key(produced)
                    if key not in seen:
                        seen.add(key)
                        out.append(produced)
                        next_queue.append(produced)
            queue = next_queue
    finally:
        env.index = saved
    return out


@function("aggregate", 1, 2, lazy=True)
def aggregate(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    aggregator = args[0]
    total = args[1](focus, env) if len(args) > 1 else []
    saved_index, saved_total = env.index, env.total
    try:
        for i, item in enumerate(inp):
            env.index = i
            env.total = total
            total = aggregator([item], env)
    finally:
        env.index, env.total = saved_index, saved_total
    return total


@special("sort", 0, 8)
def sort(args: Sequence[Expr], compile_: Callable[[Expr], Fn]) -> Callable[..., list[Any]]:
    keys: list[tuple[Fn, bool]] = []
    for arg in args:
        if isinstance(arg, Unary) and arg.op == "-":
            keys.append((compile_(arg.operand), True))
        else:
            keys.append((compile_(arg), False))

    def run(inp: list[Any], env: Env, focus: list[Any]) -> list[Any]:
        decorated: list[tuple[tuple[Any, ...], Any]]
        if not keys:
            decorated = [((to_system(item),), item) for item in inp]
            directions = [False]
        else:
            directions = [descending for _, descending in keys]
            decorated = []
            for item in inp:
                values: list[Any] = []
                for key, _ in keys:
                    result = key([item], env)
                    values.append(to_system(result[0]) if result else None)
                decorated.append((tuple(values), item))

        def cmp(a: tuple[tuple[Any, ...], Any], b: tuple[tuple[Any, ...], Any]) -> int:
            for x, y, descending in zip(a[0], b[0], directions, strict=False):
                if x is None or y is None:
                    # Empty keys sort first in either direction (official suite, testSort10).
                    c = (x is not None) - (y is not None)
                    if c:
                        return c
                    continue
                c = order(x, y) or 0
                if c:
                    return -c if descending else c
            return 0

        decorated.sort(key=functools.cmp_to_key(cmp))
        return [item for _, item in decorated]

    return run
