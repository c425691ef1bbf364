"""SearchParameter resources written to this server, as search definitions (R4 searchparameter.html).

An active SearchParameter whose type, bases and expression this server can index becomes a
search parameter like the built-in ones: new writes index it at once, existing data after the
reindex job (interactions/reindex.py). One that cannot work is refused when written, with an
OperationOutcome saying why, rather than accepted and silently never matching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from healthmesh.fhir import fhirpath
from healthmesh.fhir.definitions import SearchParamDef, search_params
from healthmesh.fhir.errors import InvalidResource, Issue
from healthmesh.fhir.structure import is_resource_type

INDEXABLE = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9\-]*")


def _builtin_codes(base: str) -> set[str]:
    return {
        p.code
        for p in search_params()
        if base in p.base or p.base[0] in ("Resource", "DomainResource")
    }


def _fail(diagnostics: str, expression: str) -> InvalidResource:
    return InvalidResource(
        [
            Issue(
                code="business-rule",
                diagnostics=diagnostics,
                expression=f"SearchParameter.{expression}",
            )
        ]
    )


def definition_from_resource(resource: Mapping[str, Any]) -> SearchParamDef:
    """The search definition a SearchParameter resource describes; raises InvalidResource."""
    code, kind, expression = resource.get("code"), resource.get("type"), resource.get("expression")
    bases = resource.get("base") or []
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise _fail("code must start with a letter and hold letters, digits and '-'", "code")
    if kind not in INDEXABLE:
        raise _fail(
            f"type {kind!r} cannot be indexed here; use one of {', '.join(sorted(INDEXABLE))}",
            "type",
        )
    for base in bases:
        if not is_resource_type(base):
            raise _fail(f"base '{base}' is not a resource type", "base")
        if code in _builtin_codes(base):
            raise _fail(f"{base} already has a built-in search parameter '{code}'", "code")
    if not isinstance(expression, str) or not expression.strip():
        raise _fail("an expression is needed to index the parameter", "expression")
    try:
        fhirpath.compile(expression)
    except fhirpath.FhirPathError as error:
        raise _fail(f"the expression is not valid FHIRPath: {error}", "expression") from None
    return SearchParamDef(
        url=str(resource.get("url") or f"urn:healthmesh:SearchParameter/{resource.get('id')}"),
        code=code,
        base=tuple(bases),
        type=kind,
        expression=expression,
        target=tuple(t for t in resource.get("target", []) if isinstance(t, str)),
        modifiers=tuple(m for m in resource.get("modifier", []) if isinstance(m, str)),
        comparators=tuple(c for c in resource.get("comparator", []) if isinstance(c, str)),
        source=f"SearchParameter/{resource.get('id')}",
    )


def is_active(resource: Mapping[str, Any]) -> bool:
    return resource.get("status") == "active"
