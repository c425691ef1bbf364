"""Type functions: is(), as(), ofType() (spec §5.2.4, §6.3) and type() (spec §10 "Reflection")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..env import Env, Fn
from ..errors import FhirPathEvaluationError
from ..nodes import Expr, Identifier, Invoke
from ..typesys import TypeTest, resolve_type, type_info
from .registry import function, special


def type_argument(arg: Expr, *, cast: bool) -> TypeTest:
    """Read a type specifier written as a function argument: ``Patient``, ``FHIR.Patient``."""
    if isinstance(arg, Identifier):
        return resolve_type(None, arg.name, cast=cast)
    if (
        isinstance(arg, Invoke)
        and isinstance(arg.target, Identifier)
        and isinstance(arg.member, Identifier)
    ):
        return resolve_type(arg.target.name, arg.member.name, cast=cast)
    raise FhirPathEvaluationError("Expected a type name")


@special("is", 1, 1)
def is_(args: Sequence[Expr], compile_: Callable[[Expr], Fn]) -> Callable[..., list[Any]]:
    test = type_argument(args[0], cast=False)

    def run(inp: list[Any], env: Env, focus: list[Any]) -> list[Any]:
        if not inp:
            return []
        if len(inp) > 1:
            raise FhirPathEvaluationError("is() expects a single item")
        return [test.matches(inp[0])]

    return run


@special("as", 1, 1)
def as_(args: Sequence[Expr], compile_: Callable[[Expr], Fn]) -> Callable[..., list[Any]]:
    test = type_argument(args[0], cast=True)

    matches = test.matches

    def run(inp: list[Any], env: Env, focus: list[Any]) -> list[Any]:
        if len(inp) > 1 and env.strict:
            raise FhirPathEvaluationError("as() expects a single item")
        # Non-strict: filter like ofType(). The spec (§6.3.4) makes several items an error,
        # but search expressions apply as() to repeating elements, e.g.
        # Observation.component.value.as(Quantity). See docs/fhirpath.md.
        return [item for item in inp if matches(item)]

    return run


@special("ofType", 1, 1)
def of_type(args: Sequence[Expr], compile_: Callable[[Expr], Fn]) -> Callable[..., list[Any]]:
    matches = type_argument(args[0], cast=True).matches

    def run(inp: list[Any], env: Env, focus: list[Any]) -> list[Any]:
        return [item for item in inp if matches(item)]

    return run


@function("type")
def type_(inp: list[Any], env: Env) -> list[Any]:
    out: list[Any] = []
    for item in inp:
        info = type_info(item)
        if info is not None:
            out.append(info)
    return out
