"""The CapabilityStatement: exactly what this server does today (R4 capabilitystatement.html)."""

from __future__ import annotations

from functools import cache
from typing import Any

from healthmesh import FHIR_VERSION, __version__
from healthmesh.fhir.structure import resource_types

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
_SEARCH_PARAMS = [
    {
        "name": "_id",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        "type": "token",
    },
    {
        "name": "_lastUpdated",
        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        "type": "date",
    },
]
_IDENTIFIER = {
    "name": "identifier",
    "type": "token",
    "documentation": "system|value, |value, value, system|",
}


@cache
def _resources() -> list[dict[str, Any]]:
    from healthmesh.fhir.definitions import search_params_by_type

    by_type = search_params_by_type()
    out = []
    for name in sorted(resource_types()):
        params = list(_SEARCH_PARAMS)
        identifier = by_type.get(name, {}).get("identifier")
        if identifier is not None:
            params.append({**_IDENTIFIER, "definition": identifier.url})
        out.append(
            {
                "type": name,
                "interaction": [{"code": code} for code in _INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": params,
            }
        )
    return out


def capability_statement(base: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "HealthMesh",
        "kind": "instance",
        "software": {"name": "HealthMesh", "version": __version__},
        "implementation": {"description": "HealthMesh aligned network node", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": _resources(),
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
            }
        ],
    }
