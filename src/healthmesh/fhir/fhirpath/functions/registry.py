"""The function table (spec §5 "Functions"): name → implementation and arity.

Eager functions receive their arguments already evaluated against the outer focus ($this of
the enclosing expression); lazy ones (where, select, iif, …) receive the compiled argument
closures and decide per item how to evaluate them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..env import Env, Fn
from ..errors import FhirPathEvaluationError
from ..nodes import Expr

EagerImpl = Callable[..., list[Any]]
LazyImpl = Callable[[list[Any], Env, list[Any], Sequence[Fn]], list[Any]]
# Special functions get the argument syntax trees (type specifiers, sort directions).
SpecialCompiler = Callable[[Sequence[Expr], Callable[[Expr], Fn]], Callable[..., list[Any]]]


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    min_args: int
    max_args: int
    impl: Callable[..., list[Any]] | None = None
    lazy: bool = False
    special: SpecialCompiler | None = None


REGISTRY: dict[str, Function] = {}

F = TypeVar("F", bound=Callable[..., Any])


def function(
    name: str, min_args: int = 0, max_args: int | None = None, *, lazy: bool = False
) -> Callable[[F], F]:
    """Register an implementation. Eager signature: ``(input, env, *args)``; lazy signature:
    ``(input, env, focus, arg_closures)``."""

    def decorate(impl: F) -> F:
        top = min_args if max_args is None else max_args
        REGISTRY[name] = Function(name, min_args, top, impl, lazy)
        return impl

    return decorate


def special(
    name: str, min_args: int, max_args: int
) -> Callable[[SpecialCompiler], SpecialCompiler]:
    """Register a function compiled from its argument syntax (``ofType(FHIR.Patient)``);
    the compiler returns ``(input, env, focus) -> result``."""

    def decorate(compiler: SpecialCompiler) -> SpecialCompiler:
        REGISTRY[name] = Function(name, min_args, max_args, special=compiler)
        return compiler

    return decorate


def singleton(collection: list[Any], what: str) -> Any:
    """The only item, ``None`` when empty; more than one item is an error (spec §4.5)."""
    if not collection:
        return None
    if len(collection) > 1:
        raise FhirPathEvaluationError(f"{what} expects a single item, got {len(collection)}")
    return collection[0]
