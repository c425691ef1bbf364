"""Static checks for strict mode (spec §4.1 "Type safety and strict evaluation").

Before a strict evaluation the expression is walked with the context's type: member names must
be elements of the (possibly several) types they are applied to, and functions that depend on
order (first(), skip(), [n] …) must not follow an unordered collection such as children()
(spec §5.8: "the ordering of the result is undefined"). Where a type cannot be inferred the
check stops quietly: it only reports errors it can prove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .. import structure
from .errors import FhirPathEvaluationError
from .model import child
from .nodes import Binary, Call, Expr, Identifier, Index, Invoke, TypeOp

_ORDERED_FUNCTIONS: Final = frozenset({"first", "last", "tail", "skip", "take", "single"})
_UNORDERED_FUNCTIONS: Final = frozenset({"children", "descendants"})
_PASS_THROUGH: Final = frozenset({"where", "distinct", "exclude", "intersect", "trace"})


@dataclass(frozen=True, slots=True)
class Shape:
    """What is statically known about a collection: type keys (None: unknown) and order."""

    types: frozenset[str] | None
    ordered: bool = True


_UNKNOWN: Final = Shape(None)


def check(expr: Expr, context_type: str | None) -> None:
    """Raise :class:`FhirPathEvaluationError` for provable semantic errors."""
    known = context_type is not None and structure.type_def(context_type) is not None
    _infer(expr, Shape(frozenset({context_type}) if known and context_type else None))


def _infer(expr: Expr, focus: Shape) -> Shape:
    if isinstance(expr, Identifier):
        return _member(focus, expr.name)
    if isinstance(expr, Invoke):
        target = _infer(expr.target, focus)
        if isinstance(expr.member, Identifier):
            return _member(target, expr.member.name)
        return _call(expr.member, target, focus)
    if isinstance(expr, Call):
        return _call(expr, focus, focus)
    if isinstance(expr, TypeOp):
        operand = _infer(expr.operand, focus)
        if expr.op == "as" and expr.type.namespace in (None, "FHIR"):
            return _cast(expr.type.name, operand)
        return _UNKNOWN
    if isinstance(expr, Index):
        target = _infer(expr.target, focus)
        _require_order(target, "an indexer")
        return Shape(target.types)
    if isinstance(expr, Binary):
        left, right = _infer(expr.left, focus), _infer(expr.right, focus)
        if expr.op == "|" and left.types is not None and right.types is not None:
            return Shape(left.types | right.types, left.ordered and right.ordered)
        return _UNKNOWN
    return _UNKNOWN


def _member(focus: Shape, name: str) -> Shape:
    if focus.types is None:
        return _UNKNOWN
    if name[:1].isupper() and structure.type_def(name) is not None:
        return Shape(frozenset({name}), focus.ordered)
    # The focus may have several possible types (a choice element): the name must be an
    # element of at least one of them.
    found: set[str] = set()
    known = False
    for type_key in focus.types:
        try:
            structure.children(type_key)
        except KeyError:
            return _UNKNOWN  # a type the definitions do not describe: nothing to prove
        info = child(type_key, name)
        if not info.known:
            continue
        known = True
        if info.variants is not None:
            found.update(t for t, _, _ in info.variants.values())
        elif info.type_key is None:
            return Shape(None, focus.ordered)  # Resource slots: any resource type
        else:
            found.add(info.type_key)
    if not known:
        types = " or ".join(sorted(focus.types))
        raise FhirPathEvaluationError(f"'{name}' is not an element of {types}")
    return Shape(frozenset(found), focus.ordered)


def _cast(type_name: str, operand: Shape) -> Shape:
    if structure.type_def(type_name) is None:
        return _UNKNOWN
    return Shape(frozenset({type_name}), operand.ordered)


def _require_order(shape: Shape, what: str) -> None:
    if not shape.ordered:
        raise FhirPathEvaluationError(f"{what} needs an ordered collection")


def _call(call: Call, target: Shape, focus: Shape) -> Shape:
    name = call.name
    if name in ("as", "ofType") and call.args and isinstance(call.args[0], Identifier):
        return _cast(call.args[0].name, target)
    if name in _UNORDERED_FUNCTIONS:
        return Shape(None, ordered=False)
    if name in _ORDERED_FUNCTIONS:
        _require_order(target, f"{name}()")
        return target
    if name in ("where", "select", "all", "exists", "repeat") and call.args:
        item = Shape(target.types)
        result = _infer(call.args[0], item)
        if name == "select":
            return Shape(result.types, target.ordered)
        return target if name == "where" else _UNKNOWN
    if name in _PASS_THROUGH:
        return target
    return _UNKNOWN
