"""Existence functions (spec §5.1) and ``not()`` (spec §6.5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..collections_ import distinct, item_key, to_boolean
from ..env import Env, Fn
from ..errors import FhirPathEvaluationError
from ..model import Node
from .filtering import where
from .registry import function


@function("empty")
def empty(inp: list[Any], env: Env) -> list[Any]:
    return [not inp]


@function("exists", 0, 1, lazy=True)
def exists(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    if args:
        return [bool(where(inp, env, focus, args))]
    return [bool(inp)]


@function("all", 1, lazy=True)
def all_(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    (criteria,) = args
    saved = env.index
    try:
        for i, item in enumerate(inp):
            env.index = i
            if to_boolean(criteria([item], env), "all()") is not True:
                return [False]
    finally:
        env.index = saved
    return [True]


def _booleans(inp: list[Any], what: str) -> list[bool]:
    out: list[bool] = []
    for item in inp:
        value = item.value if type(item) is Node else item
        if value is not True and value is not False:
            raise FhirPathEvaluationError(f"{what} expects Boolean items")
        out.append(bool(value))
    return out


@function("allTrue")
def all_true(inp: list[Any], env: Env) -> list[Any]:
    return [all(_booleans(inp, "allTrue()"))]


@function("anyTrue")
def any_true(inp: list[Any], env: Env) -> list[Any]:
    return [any(_booleans(inp, "anyTrue()"))]


@function("allFalse")
def all_false(inp: list[Any], env: Env) -> list[Any]:
    return [not any(_booleans(inp, "allFalse()"))]


@function("anyFalse")
def any_false(inp: list[Any], env: Env) -> list[Any]:
    return [not all(_booleans(inp, "anyFalse()"))]


@function("subsetOf", 1)
def subset_of(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    keys = {item_key(x) for x in other}
    return [all(item_key(x) in keys for x in inp)]


@function("supersetOf", 1)
def superset_of(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    keys = {item_key(x) for x in inp}
    return [all(item_key(x) in keys for x in other)]


@function("count")
def count(inp: list[Any], env: Env) -> list[Any]:
    return [len(inp)]


@function("distinct")
def distinct_(inp: list[Any], env: Env) -> list[Any]:
    return distinct(inp)


@function("isDistinct")
def is_distinct(inp: list[Any], env: Env) -> list[Any]:
    return [len(distinct(inp)) == len(inp)]


@function("not")
def not_(inp: list[Any], env: Env) -> list[Any]:
    value = to_boolean(inp, "not()")
    return [] if value is None else [not value]
