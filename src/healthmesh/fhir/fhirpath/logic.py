"""Boolean operators with three-valued logic (spec §6.5 "Boolean logic")."""

from __future__ import annotations

from typing import Any

from .collections_ import to_boolean
from .env import Env, Fn


def logic(op: str, left: Fn, right: Fn) -> Fn:
    """Three-valued Boolean logic (spec §6.5 "Boolean logic")."""
    what = f"'{op}'"
    if op == "and":

        def and_(focus: list[Any], env: Env) -> list[Any]:
            a = to_boolean(left(focus, env), what)
            if a is False:
                return [False]
            b = to_boolean(right(focus, env), what)
            if b is False:
                return [False]
            return [True] if a is True and b is True else []

        return and_
    if op == "or":

        def or_(focus: list[Any], env: Env) -> list[Any]:
            a = to_boolean(left(focus, env), what)
            if a is True:
                return [True]
            b = to_boolean(right(focus, env), what)
            if b is True:
                return [True]
            return [False] if a is False and b is False else []

        return or_
    if op == "xor":

        def xor(focus: list[Any], env: Env) -> list[Any]:
            a = to_boolean(left(focus, env), what)
            b = to_boolean(right(focus, env), what)
            return [] if a is None or b is None else [a != b]

        return xor

    def implies(focus: list[Any], env: Env) -> list[Any]:
        a = to_boolean(left(focus, env), what)
        if a is False:
            return [True]
        b = to_boolean(right(focus, env), what)
        if a is None:
            return [True] if b is True else []
        return [] if b is None else [b]

    return implies
