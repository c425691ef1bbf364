"""Per resource type, the search parameters to index and their compiled FHIRPath expressions.

Definitions shared by many types (e.g. clinical ``patient``: ``AllergyIntolerance.patient |
CarePlan.subject.where(resolve() is Patient) | …``) are pruned to the alternatives that start
at the type being indexed, so a resource evaluates only what can apply to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from healthmesh.fhir import fhirpath
from healthmesh.fhir.definitions import (
    SearchParamDef,
    on_params_changed,
    search_param_by_url,
    search_params_by_type,
)
from healthmesh.fhir.fhirpath.paths import Step
from healthmesh.fhir.search.plain_paths import plain_steps

# Parameters answered from the resource table's own columns, never from index rows.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
# Types the index stores (composite and special are handled apart).
INDEXED_TYPES = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})


@dataclass(frozen=True, slots=True)
class IndexedParam:
    code: str
    type: str
    path: fhirpath.CompiledPath
    definition: SearchParamDef
    # Composite parameters: each component's type and expression, relative to the element
    # the composite's own expression selects.
    components: tuple[tuple[str, fhirpath.CompiledPath], ...] = ()
    # JSON keys of which a resource needs one for ``path`` to select anything (None: unknown):
    # the indexer skips the parameter on a resource that has none of them.
    keys: frozenset[str] | None = None
    # A composite on the resource itself (``Observation`` with components ``code`` and
    # ``value.as(Quantity)``) selects nothing unless every component can: their keys.
    component_keys: tuple[frozenset[str], ...] = ()
    # A plain member path's steps, walked without the evaluator (plain_paths.py), or None.
    steps: tuple[Step, ...] | None = None


def split_union(expression: str) -> list[str]:
    """Top-level ``|`` alternatives of an expression (not inside parentheses or strings)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'" and (i == 0 or expression[i - 1] != "\\"):
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return parts


def _for_type(expression: str, resource_type: str) -> str | None:
    """The alternatives of ``expression`` that can apply to ``resource_type``."""
    kept = []
    for part in split_union(expression):
        head = part.lstrip("(").split(".", 1)[0].split(" ", 1)[0]
        if head[:1].isupper() and head not in (resource_type, "Resource", "DomainResource"):
            continue  # an alternative rooted at another resource type
        kept.append(part)
    return " | ".join(kept) if kept else None


def _components(definition: SearchParamDef) -> tuple[tuple[str, fhirpath.CompiledPath], ...]:
    """A composite's components as (type, compiled expression); () if any is unusable."""
    if definition.type != "composite" or not definition.components:
        return ()
    by_url = search_param_by_url()
    out = []
    for url, expression in definition.components:
        component = by_url.get(url)
        if component is None or component.type not in INDEXED_TYPES:
            return ()
        out.append((component.type, fhirpath.compile(expression)))
    return tuple(out)


def component_types(definition: SearchParamDef) -> tuple[str, ...] | None:
    """The component types of a composite, or None when it cannot be searched."""
    components = _components(definition)
    return tuple(kind for kind, _ in components) if components else None


@cache
def indexed_params(resource_type: str) -> tuple[IndexedParam, ...]:
    table = search_params_by_type()
    merged = {
        **table.get("Resource", {}),
        **table.get("DomainResource", {}),
        **table.get(resource_type, {}),
    }
    params = []
    for code, definition in sorted(merged.items()):
        if code in COLUMN_PARAMS or not definition.expression:
            continue
        components = _components(definition)
        special = definition.type == "special" and code == "near"
        if definition.type not in INDEXED_TYPES and not components and not special:
            continue
        expression = _for_type(definition.expression, resource_type)
        if expression is None:
            continue
        path = fhirpath.compile(expression)
        keys = path.root_keys(resource_type)
        component_keys: tuple[frozenset[str], ...] = ()
        if components and expression.strip() == resource_type:
            found = (c.root_keys(resource_type) for _, c in components)
            component_keys = tuple(k for k in found if k is not None)
        steps = None if components or special else plain_steps(expression, resource_type)
        params.append(
            IndexedParam(
                code, definition.type, path, definition, components, keys, component_keys, steps
            )
        )
    return tuple(params)


on_params_changed(indexed_params.cache_clear)
