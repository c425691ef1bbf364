"""Which Patient's compartment a resource belongs to: the patient key stored on every row.

The R4 Patient CompartmentDefinition names, per resource type, the search parameters whose
references put a resource in a patient's compartment (compartmentdefinition-patient.html).
Their expressions are all of one small shape — unions of element paths, some filtered with
``.where(resolve() is Patient)`` — so they compile here to plain path walks; the full FHIRPath
engine is not needed on this hot write path.

The key is the first patient found in definition order (``subject``/``patient`` come first),
which is what sharding by patient needs: one owner per row. A resource that references several
patients (a Group, a linked Patient) stays findable through the reference index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from healthmesh.fhir.definitions import patient_compartment, search_params_by_type
from healthmesh.fhir.ids import parse_relative

_WHERE_RESOLVE = re.compile(r"^(.*)\.where\(resolve\(\) is (\w+)\)$")
_PATH = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)*$")


@dataclass(frozen=True, slots=True)
class _RefPath:
    steps: tuple[str, ...]  # element names below the resource root
    only_type: str | None  # ``where(resolve() is X)``: keep references to X only


def _compile(resource_type: str, expression: str) -> list[_RefPath]:
    paths: list[_RefPath] = []
    for part in (p.strip() for p in expression.split("|")):
        only: str | None = None
        match = _WHERE_RESOLVE.match(part)
        if match:
            part, only = match.group(1), match.group(2)
        if not _PATH.match(part):
            raise ValueError(f"unsupported compartment expression {part!r}")
        head, *steps = part.split(".")
        if head == resource_type:  # unions may name other types (e.g. clinical ``patient``)
            paths.append(_RefPath(tuple(steps), only))
    return paths


@cache
def _compartment_paths() -> Mapping[str, tuple[_RefPath, ...]]:
    params = search_params_by_type()
    table: dict[str, tuple[_RefPath, ...]] = {}
    for resource_type, codes in patient_compartment().items():
        paths: list[_RefPath] = []
        for code in codes:
            if code == "{def}":
                continue
            definition = params[resource_type][code]
            assert definition.expression is not None
            paths.extend(_compile(resource_type, definition.expression))
        table[resource_type] = tuple(paths)
    return table


def _walk(node: Any, steps: tuple[str, ...]) -> list[Any]:
    current = [node]
    for step in steps:
        following: list[Any] = []
        for item in current:
            value = item.get(step) if isinstance(item, dict) else None
            if isinstance(value, list):
                following.extend(value)
            elif value is not None:
                following.append(value)
        current = following
    return current


def patient_key(resource: Mapping[str, Any]) -> str | None:
    """The id of the Patient whose compartment holds this resource, or None."""
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    paths = _compartment_paths().get(str(resource_type))
    if not paths:
        return None
    for path in paths:
        for ref in _walk(resource, path.steps):
            literal = ref.get("reference") if isinstance(ref, dict) else None
            if not isinstance(literal, str):
                continue
            target = parse_relative(literal.rsplit("/_history/", 1)[0].split("://", 1)[-1])
            if target is None:
                # absolute URLs: the last two segments name the resource
                tail = "/".join(literal.split("/_history/", 1)[0].rsplit("/", 2)[-2:])
                target = parse_relative(tail)
            if target is not None and target.resource_type == "Patient":
                return target.id
    return None


def compartment_types() -> frozenset[str]:
    return frozenset(_compartment_paths()) | {"Patient"}
