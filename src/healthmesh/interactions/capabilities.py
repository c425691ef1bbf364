"""The CapabilityStatement: exactly what this server does today (R4 capabilitystatement.html)."""

from __future__ import annotations

from functools import cache
from typing import Any

from healthmesh import FHIR_VERSION, __version__
from healthmesh.fhir.definitions import on_params_changed, search_params_by_type
from healthmesh.fhir.search.registry import component_types
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
_COMMON = [
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
_LIST = {"name": "_list", "definition": "http://hl7.org/fhir/search.html#list", "type": "special"}
# Parameter types the search compiler answers (plus composites of these, and Location near).
SUPPORTED_TYPES = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})


def _search_params(resource_type: str) -> list[dict[str, Any]]:
    table = search_params_by_type()
    merged = {
        **table.get("Resource", {}),
        **table.get("DomainResource", {}),
        **table.get(resource_type, {}),
    }
    params = [*_COMMON, _LIST]
    for code, definition in sorted(merged.items()):
        searchable = (
            definition.type in SUPPORTED_TYPES
            or (definition.type == "composite" and component_types(definition) is not None)
            or code == "near"
        )
        expressed = definition.expression is not None or code in ("_content", "_text")
        if code in ("_id", "_lastUpdated") or not searchable or not expressed:
            continue
        params.append({"name": code, "definition": definition.url, "type": definition.type})
    return params


# Bulk Data Access IG v2.0.0 (docs/export.md): system, Patient and Group level $export.
_BULK = "http://hl7.org/fhir/uv/bulkdata"
_EXPORT = {"name": "export", "definition": f"{_BULK}/OperationDefinition/export"}


@cache
def _resources() -> list[dict[str, Any]]:
    out = []
    for name in sorted(resource_types()):
        extra: dict[str, Any] = {}
        if name == "Group":
            extra["operation"] = [
                {"name": "export", "definition": f"{_BULK}/OperationDefinition/group-export"}
            ]
        if name == "Patient":
            extra["operation"] = [
                {"name": "export", "definition": f"{_BULK}/OperationDefinition/patient-export"},
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                },
                {  # IPS IG: the International Patient Summary document (share/ips.py)
                    "name": "summary",
                    "definition": "http://hl7.org/fhir/uv/ips/OperationDefinition/summary",
                },
                {  # CMS Kill the Clipboard PatientSharedBundle (share/bundle.py); no published
                    # OperationDefinition exists, so the canonical is this project's own
                    "name": "shared-bundle",
                    "definition": "https://healthmesh.invalid/OperationDefinition/Patient-shared-bundle",
                    "documentation": "A Kill the Clipboard PatientSharedBundle: the patient"
                    " summary's resources, the C4DIC insurance card, patient-provided PDFs"
                    " (POST Parameters 'document') and a PDF rendering ('rendering', default true).",
                },
            ]
        out.append(
            {
                **extra,
                "type": name,
                "interaction": [{"code": code} for code in _INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": _search_params(name),
                "searchInclude": ["*"],
                "searchRevInclude": ["*"],
            }
        )
    return out


def _security(base: str) -> dict[str, Any]:
    """rest.security for SMART App Launch 2.2 (conformance.html#using-capabilitystatement)."""
    return {
        "cors": True,
        # updateCreate is per token: where a PUT could tell a caller which ids exist, it
        # may not choose them (interactions/write.py, docs/security.md).
        "description": (
            "Update-as-create (a PUT at an id with no resource) is open to tokens that may"
            " change every resource of the type (backend services with system/ scopes, or"
            " any token for resources no patient owns). Other tokens — a patient's, or any"
            " bound to a patient compartment or to search criteria — create with POST, and"
            " a PUT of theirs at an id they cannot change is answered 405."
        ),
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": f"{base}/auth/authorize"},
                    {"url": "token", "valueUri": f"{base}/auth/token"},
                    {"url": "introspect", "valueUri": f"{base}/auth/introspect"},
                    {"url": "revoke", "valueUri": f"{base}/auth/revoke"},
                    {"url": "register", "valueUri": f"{base}/auth/register"},
                ],
            }
        ],
    }


def capability_statement(base: str, *, secured: bool = False) -> dict[str, Any]:
    """``secured``: every request needs a SMART token (the node runs without --open)."""
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": _resources(),
        "interaction": [
            {"code": "transaction"},
            {"code": "batch"},
            {"code": "history-system"},
            {"code": "search-system"},
        ],
        "searchParam": _search_params("Resource"),
        "operation": [_EXPORT],
        "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
    }
    if secured:
        rest["security"] = _security(base)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "HealthMesh",
        "kind": "instance",
        "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data"],
        "software": {"name": "HealthMesh", "version": __version__},
        "implementation": {"description": "HealthMesh aligned network node", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }


on_params_changed(_resources.cache_clear)
