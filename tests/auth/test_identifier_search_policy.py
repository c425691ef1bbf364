"""Identifier searches, whose statements PostgreSQL may plan once and keep when unrestricted
(store/statements.py), still answer within the token's scopes on every execution: a
patient token finds its own patient by identifier, never another's, however often asked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from secured import SecuredNode, secured_node

from support import FHIR_JSON, put_all

RUN = uuid.uuid4().hex[:8]
SYSTEM = f"urn:identifier-policy:{RUN}"
ADA, BOB = f"ada-{RUN}", f"bob-{RUN}"


def _patient(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": SYSTEM, "value": f"mrn-{pid}"}],
    }


def _observation(oid: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "identifier": [{"system": SYSTEM, "value": oid}],
        "code": {"text": "a test"},
        "subject": {"reference": f"Patient/{patient}"},
    }


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        records = [_patient(ADA), _patient(BOB), _observation(f"{ADA}-o", ADA)]
        records.append(_observation(f"{BOB}-o", BOB))
        with running.client("system/*.cruds") as admin:
            response = admin.post("", json=put_all(records), headers=FHIR_JSON)
            assert response.status_code == 200, response.text
        yield running


def _found(client: httpx.Client, path: str, value: str) -> list[str]:
    response = client.get(path, params={"identifier": f"{SYSTEM}|{value}"})
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def test_a_patient_token_finds_only_its_own_patient_by_identifier_every_time(
    node: SecuredNode,
) -> None:
    with node.client("patient/*.rs", patient=ADA) as ada:
        for _ in range(12):  # past the executions after which a plan could be kept
            assert _found(ada, "/Patient", f"mrn-{ADA}") == [ADA]
            assert _found(ada, "/Patient", f"mrn-{BOB}") == []
            assert _found(ada, "/Observation", f"{ADA}-o") == [f"{ADA}-o"]
            assert _found(ada, "/Observation", f"{BOB}-o") == []


def test_a_system_token_finds_each_patient_by_identifier(node: SecuredNode) -> None:
    with node.client("system/*.rs") as system:
        for _ in range(12):
            assert _found(system, "/Patient", f"mrn-{ADA}") == [ADA]
            assert _found(system, "/Patient", f"mrn-{BOB}") == [BOB]
