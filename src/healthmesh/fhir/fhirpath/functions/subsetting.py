"""Subsetting (spec §5.3) and combining (spec §5.4) functions."""

from __future__ import annotations

from typing import Any

from ..collections_ import distinct, item_key, single_value, union
from ..env import Env
from ..errors import FhirPathEvaluationError
from .registry import function


def _count(arg: list[Any], what: str) -> int | None:
    value = single_value(arg, what)
    if value is None:
        return None
    if type(value) is not int:
        raise FhirPathEvaluationError(f"{what} expects an Integer")
    return int(value)


@function("single")
def single(inp: list[Any], env: Env) -> list[Any]:
    if len(inp) > 1:
        raise FhirPathEvaluationError(f"single() found {len(inp)} items")
    return list(inp)


@function("first")
def first(inp: list[Any], env: Env) -> list[Any]:
    return inp[:1]


@function("last")
def last(inp: list[Any], env: Env) -> list[Any]:
    return inp[-1:]


@function("tail")
def tail(inp: list[Any], env: Env) -> list[Any]:
    return inp[1:]


@function("skip", 1)
def skip(inp: list[Any], env: Env, num: list[Any]) -> list[Any]:
    n = _count(num, "skip()")
    if n is None:
        return []
    return inp[max(n, 0) :]


@function("take", 1)
def take(inp: list[Any], env: Env, num: list[Any]) -> list[Any]:
    n = _count(num, "take()")
    if n is None or n <= 0:
        return []
    return inp[:n]


@function("intersect", 1)
def intersect(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    keys = {item_key(x) for x in other}
    return distinct([x for x in inp if item_key(x) in keys])


@function("exclude", 1)
def exclude(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    keys = {item_key(x) for x in other}
    return [x for x in inp if item_key(x) not in keys]


@function("union", 1)
def union_(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return union(inp, other)


@function("combine", 1)
def combine(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    return inp + other
