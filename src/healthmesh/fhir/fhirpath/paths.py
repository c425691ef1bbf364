"""Path navigation steps (spec §3 "Path selection"): member access, type-name filters, fused
chains, and the helpers the compiler uses to speed up search-parameter shapes.

A step maps a collection to a collection: ``step(items, env)``. ``Patient.name.given`` becomes
three steps run in one loop; each member step caches, per parent type, how to find its child.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import structure
from .env import Env, Fn
from .errors import FhirPathEvaluationError
from .model import Child, Node, child
from .nodes import Binary, Expr, Identifier, Index, Invoke, TypeOp
from .typesys import TypeInfo, fhir_is_a
from .values import STRING_TYPES

Step = Callable[[list[Any], Env], list[Any]]


def chain(steps: list[Step]) -> Fn:
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def chain2(focus: list[Any], env: Env) -> list[Any]:
            items = first(focus, env)
            return second(items, env) if items else items

        return chain2
    fused = tuple(steps)

    def chain_n(focus: list[Any], env: Env) -> list[Any]:
        items = focus
        for step in fused:
            items = step(items, env)
            if not items:
                return items
        return items

    return chain_n


def member(name: str, *, at_root: bool) -> Step:
    """Navigation to child ``name``; a capitalised FHIR type name filters by type instead
    (``Patient.name`` on a Patient: spec §3 "Path selection" on type names)."""
    if name[:1].isupper() and structure.type_def(name) is not None:
        return type_filter(name, at_root=at_root)
    cache: dict[str | None, Child] = {}

    def navigate(items: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if type(item) is Node:
                data = item.value
                if type(data) is not dict:
                    data = item.ext  # a primitive's id/extension: its "_name" sibling
                    if data is None:
                        continue
                key = item.type_key
                info = cache.get(key)
                if info is None:
                    info = cache[key] = child(key, name)
                if info.undefined and env.strict:
                    raise FhirPathEvaluationError(
                        f"'{name}' is not an element of {item.fhir_type or key}"
                    )
                info.collect(data, out)
            elif type(item) is TypeInfo:
                value = item.member(name)
                if value is not None:
                    out.append(value)
        return out

    return navigate


def type_filter(name: str, *, at_root: bool) -> Step:
    """Keep the items of FHIR type ``name`` or a subtype. In strict mode a path that starts
    with another type than the context's is an error (testSimpleWithWrongContext)."""
    is_a: dict[str | None, bool] = {None: False}  # fhir_type -> derives from ``name``

    def matches(item: Any) -> bool:
        if type(item) is not Node:
            return False
        fhir_type = item.fhir_type
        ok = is_a.get(fhir_type)
        if ok is None:
            assert fhir_type is not None
            ok = is_a[fhir_type] = fhir_is_a(fhir_type, name)
        return ok

    def filter_type(items: list[Any], env: Env) -> list[Any]:
        if len(items) == 1:
            if matches(items[0]):
                return items
            out = []
        else:
            out = [item for item in items if matches(item)]
        if not out and items and at_root and env.strict:
            raise FhirPathEvaluationError(f"The context is not a {name}")
        return out

    return filter_type


def member_equals(name: str, literal: str, generic: Fn) -> Fn:
    """``use = 'official'`` inside where(): compare the child's JSON string directly.

    Only for a single complex focus whose child is a string-typed primitive present as a plain
    string (no extensions, not repeating); every other shape takes the generic path.
    """
    cache: dict[str | None, bool] = {}

    def compare_member(focus: list[Any], env: Env) -> list[Any]:
        if len(focus) == 1:
            item = focus[0]
            if type(item) is Node:
                data = item.value
                if type(data) is dict:
                    key = item.type_key
                    fast = cache.get(key)
                    if fast is None:
                        info = child(key, name)
                        fast = cache[key] = (
                            info.known and info.primitive and info.fhir_type in STRING_TYPES
                        )
                    if fast:
                        raw = data.get(name)
                        if type(raw) is str and ("_" + name) not in data:
                            return [raw == literal]
        return generic(focus, env)

    return compare_member


def flatten_union(expr: Expr, out: list[Expr]) -> None:
    if isinstance(expr, Binary) and expr.op == "|":
        flatten_union(expr.left, out)
        flatten_union(expr.right, out)
    else:
        out.append(expr)


def leading_type(expr: Expr) -> str | None:
    """The type name a path starts with (``Patient`` in ``(Patient.name as HumanName).given``),
    when it is a FHIR type: such a path yields nothing for a focus of another type."""
    while True:
        if isinstance(expr, Identifier):
            name = expr.name
            return name if name[:1].isupper() and structure.type_def(name) is not None else None
        if isinstance(expr, Invoke | Index):
            expr = expr.target
        elif isinstance(expr, TypeOp):
            expr = expr.operand
        else:
            return None
