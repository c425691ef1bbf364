"""Helpers for tests: sample bodies, unique identifiers, where the shared data lives."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SYNTHEA = SHARED / "data/synthea/R4"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def put_all(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A transaction Bundle that PUTs each record at its own id (fixtures with known ids)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in records
        ],
    }


def without_id(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` for a POST: its id left out, for the server to assign."""
    return {k: v for k, v in resource.items() if k != "id"}


def privacy_consent(
    patient: str, provision: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """An active patient-privacy Consent (R4 Consent, scope consentscope#patient-privacy,
    category LOINC 59284-0) of ``patient`` (a reference), with ``provision`` when given."""
    body: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
    }
    if provision is not None:
        body["provision"] = provision
    return body | extra


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": unique("mrn")}],
        "name": [{"family": "Test", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }
    body.update(extra)
    return body


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }
    body.update(extra)
    return body


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/{body['resourceType']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def issue_expressions(response: httpx.Response) -> list[str]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]
