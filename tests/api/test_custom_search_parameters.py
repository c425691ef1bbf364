"""Custom SearchParameters: searchable after a background reindex, progress as a Task (R4 searchparameter.html)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from support import FHIR_JSON, create, patient, unique


def _wait_completed(
    client: httpx.Client, sp_id: str, version: str, seconds: float = 30
) -> dict[str, Any]:
    key = f"urn:healthmesh:reindex|SearchParameter/{sp_id}/_history/{version}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = client.get("/Task", params={"identifier": key}).json()
        tasks = [e["resource"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]
        if tasks and tasks[0]["status"] == "completed":
            task: dict[str, Any] = tasks[0]
            return task
        time.sleep(0.1)
    raise AssertionError(f"reindex of SearchParameter/{sp_id} did not complete")


def test_a_new_search_parameter_finds_existing_and_new_data(client: httpx.Client) -> None:
    url = f"http://example.org/fhir/StructureDefinition/{unique('eye')}"
    code = unique("eye-colour")

    def with_eyes(colour: str) -> dict[str, Any]:
        return patient(extension=[{"url": url, "valueCode": colour}])

    before = create(client, with_eyes("blue"))["id"]
    create(client, with_eyes("brown"))
    parameter = {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/fhir/SearchParameter/{code}",
        "name": "EyeColour",
        "status": "active",
        "description": "Eye colour from an extension",
        "code": code,
        "base": ["Patient"],
        "type": "token",
        "expression": f"Patient.extension.where(url = '{url}').value",
    }
    created = client.post("/SearchParameter", json=parameter, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    task = _wait_completed(client, created.json()["id"], "1")
    outputs = {o["type"]["text"]: o.get("valueInteger") for o in task["output"]}
    assert outputs["processed"] >= 2
    after = create(client, with_eyes("blue"))["id"]
    found = client.get("/Patient", params={code: "blue"}).json()
    assert {e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"} == {
        before,
        after,
    }
    statement = client.get("/metadata").json()
    patient_params = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")[
        "searchParam"
    ]
    assert code in {p["name"] for p in patient_params}


def test_a_search_parameter_that_could_never_match_is_refused(client: httpx.Client) -> None:
    base = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp",
        "name": "X",
        "status": "active",
        "description": "x",
        "base": ["Patient"],
    }
    broken = [
        {**base, "code": "bad-expr", "type": "token", "expression": "Patient.name.where("},
        {
            **base,
            "code": "gender",
            "type": "token",
            "expression": "Patient.gender",
        },  # shadows a built-in
        {**base, "code": "odd", "type": "special", "expression": "Patient.id"},
    ]
    for body in broken:
        response = client.post("/SearchParameter", json=body, headers=FHIR_JSON)
        assert response.status_code == 400, body
        assert response.json()["issue"][0]["expression"][0].startswith("SearchParameter.")
    draft = {
        **base,
        "code": "later",
        "type": "token",
        "expression": "Patient.name.where(",
        "status": "draft",
    }
    assert client.post("/SearchParameter", json=draft, headers=FHIR_JSON).status_code == 201
