"""Compile an AST into a tree of Python closures (evaluated without re-walking the AST).

Each closure has the signature ``fn(focus, env) -> collection`` where ``focus`` is the
collection that identifiers navigate from ($this; spec §3 "Path selection"). Chains of member
accesses (``Patient.name.given``) are fused into one loop over pre-built steps, and the type
and choice lookups each step needs are cached per parent type.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from . import functions  # noqa: F401  (registers the function table)
from .collections_ import distinct, single_value
from .env import Env, Fn
from .errors import FhirPathEvaluationError, FhirPathSyntaxError
from .functions.registry import REGISTRY
from .logic import logic
from .model import Node
from .nodes import (
    Binary,
    Call,
    EmptySet,
    Expr,
    Identifier,
    Index,
    Invoke,
    Literal,
    Special,
    TypeOp,
    Unary,
    Variable,
)
from .operators import BINARY, negate, positive
from .paths import Step, chain, flatten_union, leading_type, member, member_equals
from .quantity import Quantity
from .terms import empty, literal, special, variable
from .typesys import fhir_is_a, resolve_type


class Compiler:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str, expr: Expr) -> FhirPathSyntaxError:
        return FhirPathSyntaxError(message, position=expr.pos, expression=self.source)

    def compile(self, expr: Expr) -> Fn:
        if isinstance(expr, Invoke) and isinstance(expr.member, Call):
            return self.call(expr.member, self.compile(expr.target))
        if isinstance(expr, Identifier | Invoke):
            return chain(self.steps(expr, at_root=True))
        if isinstance(expr, Literal):
            return literal(expr.value)
        if isinstance(expr, EmptySet):
            return empty
        if isinstance(expr, Call):
            return self.call(expr, None)
        if isinstance(expr, Binary):
            return self.binary(expr)
        if isinstance(expr, Unary):
            return self.unary(expr)
        if isinstance(expr, TypeOp):
            return self.type_op(expr)
        if isinstance(expr, Index):
            return self.index(expr)
        if isinstance(expr, Variable):
            return variable(expr.name)
        if isinstance(expr, Special):
            return special(expr.name)
        raise self.error(f"Unsupported expression {type(expr).__name__}", expr)

    # -- paths ------------------------------------------------------------------------------

    def steps(self, expr: Expr, *, at_root: bool) -> list[Step]:
        """Flatten ``a.b.c(…).d`` into a list of steps applied left to right."""
        if isinstance(expr, Identifier):
            return [member(expr.name, at_root=at_root)]
        if isinstance(expr, Invoke) and isinstance(expr.member, Identifier):
            steps = self.steps(expr.target, at_root=at_root)
            steps.append(member(expr.member.name, at_root=False))
            return steps
        # A function call needs the outer focus for its arguments: not fused.
        return [self.compile(expr)]

    # -- functions --------------------------------------------------------------------------

    def call(self, call: Call, target: Fn | None) -> Fn:
        spec = REGISTRY.get(call.name)
        if spec is None:
            raise self.error(f"Unknown function '{call.name}'", call)
        n = len(call.args)
        if not spec.min_args <= n <= spec.max_args:
            expected = (
                str(spec.min_args)
                if spec.min_args == spec.max_args
                else f"{spec.min_args}..{spec.max_args}"
            )
            raise self.error(
                f"Function '{call.name}' expects {expected} argument(s), got {n}", call
            )
        try:
            if spec.special is not None:
                return _bind_special(spec.special(call.args, self.compile), target)
        except FhirPathEvaluationError as exc:
            raise self.error(exc.message, call) from None
        impl = spec.impl
        assert impl is not None
        args = tuple(self.compile(a) for a in call.args)
        if spec.lazy:
            return _bind_lazy(impl, args, target)
        return _bind_eager(impl, args, target)

    # -- operators --------------------------------------------------------------------------

    def binary(self, expr: Binary) -> Fn:
        op = expr.op
        if op == "|":
            return self.union(expr)
        left = self.compile(expr.left)
        right = self.compile(expr.right)
        if op in ("and", "or", "xor", "implies"):
            return logic(op, left, right)
        impl = BINARY[op]

        def generic(focus: list[Any], env: Env) -> list[Any]:
            return impl(left(focus, env), right(focus, env))

        if (
            op == "="
            and isinstance(expr.left, Identifier)
            and isinstance(expr.right, Literal)
            and type(expr.right.value) is str
            and not expr.left.name[:1].isupper()
        ):
            return member_equals(expr.left.name, expr.right.value, generic)
        return generic

    def union(self, expr: Binary) -> Fn:
        """``a | b | c …`` as one n-ary union (spec §6.5.1).

        Search expressions union paths of many resource types (``Patient.name | Person.name
        | …``). A branch that starts with a type name can only produce results for a focus of
        that type, so per focus type only the branches that can match are evaluated.
        """
        branches: list[Expr] = []
        flatten_union(expr, branches)
        compiled = [(leading_type(b), self.compile(b)) for b in branches]
        by_type: dict[str | None, tuple[Fn, ...]] = {}
        every = tuple(fn for _, fn in compiled)

        def select(focus: list[Any], env: Env) -> tuple[Fn, ...]:
            if len(focus) != 1 or type(focus[0]) is not Node or env.strict:
                return every
            key = focus[0].fhir_type
            chosen = by_type.get(key)
            if chosen is None:
                chosen = by_type[key] = tuple(
                    fn
                    for lead, fn in compiled
                    if lead is None or (key is not None and fhir_is_a(key, lead))
                )
            return chosen

        def union_n(focus: list[Any], env: Env) -> list[Any]:
            out: list[Any] = []
            for fn in select(focus, env):
                out.extend(fn(focus, env))
            return distinct(out)

        return union_n

    def unary(self, expr: Unary) -> Fn:
        operand = expr.operand
        if isinstance(operand, Literal) and expr.op == "-":
            value = operand.value
            if type(value) in (int, Decimal, Quantity):
                return literal(negate([value])[0])
        inner = self.compile(operand)
        if expr.op == "-":
            return lambda focus, env: negate(inner(focus, env))
        return lambda focus, env: positive(inner(focus, env))

    def type_op(self, expr: TypeOp) -> Fn:
        try:
            test = resolve_type(expr.type.namespace, expr.type.name, cast=expr.op == "as")
        except FhirPathEvaluationError as exc:
            raise self.error(exc.message, expr.type) from None
        operand = self.compile(expr.operand)
        matches = test.matches
        if expr.op == "is":

            def is_op(focus: list[Any], env: Env) -> list[Any]:
                items = operand(focus, env)
                if not items:
                    return []
                if len(items) > 1:
                    raise FhirPathEvaluationError("'is' expects a single item")
                return [matches(items[0])]

            return is_op

        # Non-strict "x as T" filters a collection: R4 search parameters apply it to repeating
        # elements, e.g. (Observation.component.value as Quantity); the spec (§6.3.4) makes
        # several items an error, which strict mode keeps. See docs/fhirpath.md.
        def as_op(focus: list[Any], env: Env) -> list[Any]:
            items = operand(focus, env)
            if len(items) > 1 and env.strict:
                raise FhirPathEvaluationError("'as' expects a single item")
            return [item for item in items if matches(item)]

        return as_op

    def index(self, expr: Index) -> Fn:
        target = self.compile(expr.target)
        index = self.compile(expr.index)

        def indexer(focus: list[Any], env: Env) -> list[Any]:
            items = target(focus, env)
            i = single_value(index(focus, env), "indexer")
            if i is None:
                return []
            if type(i) is not int:
                raise FhirPathEvaluationError("Index must be an integer")
            return [items[i]] if 0 <= i < len(items) else []

        return indexer


# A function's input is its target's result, or the focus when it starts the expression; its
# arguments are evaluated against the outer focus ($this), not against the input (spec §5:
# name.given.combine(name.family) combines with the Patient's family names).


def _bind_special(impl: Callable[..., list[Any]], target: Fn | None) -> Fn:
    if target is None:
        return lambda focus, env: impl(focus, env, focus)
    return lambda focus, env: impl(target(focus, env), env, focus)


def _bind_lazy(impl: Callable[..., list[Any]], args: tuple[Fn, ...], target: Fn | None) -> Fn:
    if target is None:
        return lambda focus, env: impl(focus, env, focus, args)
    return lambda focus, env: impl(target(focus, env), env, focus, args)


def _bind_eager(impl: Callable[..., list[Any]], args: tuple[Fn, ...], target: Fn | None) -> Fn:
    n = len(args)
    if target is None:
        if n == 0:
            return lambda focus, env: impl(focus, env)
        if n == 1:
            (a,) = args
            return lambda focus, env: impl(focus, env, a(focus, env))
        return lambda focus, env: impl(focus, env, *(a(focus, env) for a in args))
    if n == 0:
        return lambda focus, env: impl(target(focus, env), env)
    if n == 1:
        (a,) = args
        return lambda focus, env: impl(target(focus, env), env, a(focus, env))
    return lambda focus, env: impl(target(focus, env), env, *(a(focus, env) for a in args))


def compile_ast(expr: Expr, source: str) -> Fn:
    return Compiler(source).compile(expr)
