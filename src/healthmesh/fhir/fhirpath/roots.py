"""Which top-level elements of a resource an expression's result can come from.

``Observation.value.as(Quantity) | Observation.component.value.as(Quantity)`` selects only
from ``valueQuantity`` and ``component``: on an Observation with neither, its result is empty
without evaluating it. The indexer evaluates ~35 expressions per resource, most of them on
elements the resource does not have, so knowing this up front skips much of its work.

The analysis is conservative: it answers only for path shapes whose emptiness follows from
the spec (navigation from an empty collection is empty, §3; so is a ``where``/``select``/
``as``/``ofType``/… of one, §5.2, §6.3), and ``None`` — always evaluate — for anything else.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import child
from .nodes import Binary, Expr, Identifier, Invoke, TypeOp, TypeSpec
from .typesys import fhir_is_a

# Functions whose result is empty when their input collection is (N1 §5): each works item by
# item on the input, or picks items out of it. exists(), count(), empty(), not() … are not here.
_EMPTY_IN_EMPTY_OUT = frozenset(
    {
        "where",
        "select",
        "repeat",
        "ofType",
        "as",
        "first",
        "last",
        "tail",
        "skip",
        "take",
        "single",
        "distinct",
        "children",
        "descendants",
        "resolve",
        "extension",
    }
)

# A root element, and the type an as()/ofType() right on it narrows it to (None: any).
Root = tuple[str, str | None]


def root_keys(expr: Expr, resource_type: str) -> frozenset[str] | None:
    """The JSON keys of a ``resource_type`` resource at least one of which must be present for
    ``expr`` to select anything, or None if that cannot be told.

    An element is its key and its ``_key`` sibling (R4 json.html#primitive); a choice element
    ``value[x]`` is its variants' keys (``valueQuantity``, ``_valueString`` …), only those of
    the type an ``as(T)`` on it asks for. Keys come from the definitions navigation uses
    (model.child), so they are exactly the keys evaluation would look at.
    """
    roots = root_elements(expr, (resource_type, "Resource", "DomainResource"))
    if roots is None:
        return None
    keys: set[str] = set()
    for name, narrowed in roots:
        info = child(resource_type, name)
        if info.variants is not None:
            found = {
                key
                for key, (_, fhir_type, _) in info.variants.items()
                if narrowed is None or fhir_is_a(fhir_type, narrowed)
            }
        elif info.typed:
            found = {name}
        else:
            return None  # navigation falls back to scanning every key (_untyped_choice)
        keys |= found | {"_" + key for key in found}
    return frozenset(keys)


def root_elements(expr: Expr, type_names: Iterable[str]) -> frozenset[Root] | None:
    """The elements below the root an expression selects from, or None if unsure.

    ``type_names`` are the names an expression may start with to mean the root resource
    (its type and its base types, ``Resource``, ``DomainResource``).
    """
    return _roots(expr, frozenset(type_names))


def _roots(expr: Expr, types: frozenset[str]) -> frozenset[Root] | None:
    if isinstance(expr, Binary):
        if expr.op != "|":
            return None
        left, right = _roots(expr.left, types), _roots(expr.right, types)
        return None if left is None or right is None else left | right
    if isinstance(expr, TypeOp):
        if expr.op != "as":
            return None
        return _cast(expr.operand, _type_name(expr.type), types)
    direct = _direct(expr, types)
    if direct is not None:
        return frozenset({(direct, None)})
    if not isinstance(expr, Invoke):
        return None
    target, member = expr.target, expr.member
    if isinstance(target, Identifier) and target.name in types:
        # Type.extension(url) reads root.extension; other functions on the root: unsure.
        return frozenset({("extension", None)}) if member.name == "extension" else None
    if isinstance(member, Identifier):
        return _roots(target, types)  # navigating deeper keeps the roots (and narrowing)
    if member.name not in _EMPTY_IN_EMPTY_OUT:
        return None
    if member.name in ("as", "ofType") and len(member.args) == 1:
        return _cast(target, _type_name(member.args[0]), types)
    return _roots(target, types)


def _direct(expr: Expr, types: frozenset[str]) -> str | None:
    """The root element ``expr`` is exactly (``Type.name``, or a bare lower-case ``name``,
    which navigates from the root: paths.member makes only capitalised names type filters)."""
    if isinstance(expr, Identifier):
        return expr.name if expr.name[:1].islower() else None
    if (
        isinstance(expr, Invoke)
        and isinstance(expr.target, Identifier)
        and expr.target.name in types
        and isinstance(expr.member, Identifier)
    ):
        return expr.member.name
    return None


def _cast(target: Expr, type_name: str | None, types: frozenset[str]) -> frozenset[Root] | None:
    """``x.as(T)``/``x.ofType(T)``: right on a root element, only its variants of type T can
    give a result (§6.3); anywhere else the roots of ``x`` as they are."""
    name = _direct(target, types)
    if name is not None and type_name is not None:
        return frozenset({(name, type_name)})
    return _roots(target, types)


def _type_name(expr: Expr) -> str | None:
    if isinstance(expr, TypeSpec) and expr.namespace in (None, "FHIR"):
        return expr.name
    if isinstance(expr, Identifier):
        return expr.name
    return None
