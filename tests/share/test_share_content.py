"""A share created without a Bundle carries the patient's own Kill the Clipboard bundle."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from healthmesh.auth.grant import AccessGrant
from healthmesh.share.content import OwnRecordBundles
from healthmesh.store.repository import Repository

from conftest import ServerThread
from support import FHIR_JSON


def _content(database_url: str, patient: str) -> dict[str, Any] | None:
    async def body() -> dict[str, Any] | None:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            grant = AccessGrant(client_id="share-test", scope="patient/*.rs", patient=patient)
            return await OwnRecordBundles(repository, "http://localhost/fhir").summary(grant)
        finally:
            await repository.close()

    return asyncio.run(body())


def test_the_default_content_is_the_patients_shared_bundle_and_nobody_elses(
    server: ServerThread, database_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=server.base, timeout=30) as fhir:
        for pid in (f"own-{run}", f"other-{run}"):
            patient = {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"family": "Share", "given": [pid]}],
                "gender": "female",
                "birthDate": "1980-02-03",
            }
            assert fhir.put(f"/Patient/{pid}", json=patient, headers=FHIR_JSON).status_code == 201
            condition = {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"text": f"condition of {pid}"},
            }
            assert fhir.post("/Condition", json=condition, headers=FHIR_JSON).status_code == 201
    bundle = _content(database_url, f"own-{run}")
    assert bundle is not None and bundle["type"] == "collection"
    patients = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patients) == 1
    text = str(bundle)
    assert f"condition of own-{run}" in text and f"other-{run}" not in text
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])
    assert _content(database_url, f"nobody-{run}") is None
