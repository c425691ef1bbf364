"""create and conditional create: R4 http.html#create, #ccreate."""

from __future__ import annotations

import httpx

from support import FHIR_JSON, patient, unique


def test_create_assigns_id_version_and_location(client: httpx.Client) -> None:
    response = client.post("/Patient", json=patient(id="client-chosen"), headers=FHIR_JSON)
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"  # POST ignores a client id (R4 http.html#create)
    assert body["meta"]["versionId"] == "1"
    assert response.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert response.headers["etag"] == 'W/"1"'


def test_prefer_return_minimal_sends_no_body(client: httpx.Client) -> None:
    response = client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert response.status_code == 201 and response.content == b""
    assert "location" in response.headers


def test_prefer_return_operation_outcome(client: httpx.Client) -> None:
    response = client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"}
    )
    assert response.status_code == 201
    assert response.json()["resourceType"] == "OperationOutcome"


def test_conditional_create_with_no_match_creates(client: httpx.Client) -> None:
    mrn = unique()
    body = patient(identifier=[{"system": "urn:mrn", "value": mrn}])
    response = client.post(
        "/Patient", json=body, headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:mrn|{mrn}"}
    )
    assert response.status_code == 201


def test_conditional_create_with_one_match_returns_it_without_creating(
    client: httpx.Client,
) -> None:
    mrn = unique()
    body = patient(identifier=[{"system": "urn:mrn", "value": mrn}])
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier=urn:mrn|{mrn}"}
    first = client.post("/Patient", json=body, headers=headers)
    second = client.post("/Patient", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    found = client.get("/Patient", params={"identifier": f"urn:mrn|{mrn}"}).json()
    assert found["total"] == 1


def test_conditional_create_with_several_matches_is_412(client: httpx.Client) -> None:
    mrn = unique()
    for _ in range(2):
        client.post(
            "/Patient",
            json=patient(identifier=[{"system": "urn:mrn", "value": mrn}]),
            headers=FHIR_JSON,
        )
    response = client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": f"identifier={mrn}"}
    )
    assert response.status_code == 412


def test_conditional_create_with_unsupported_criteria_is_refused_not_ignored(
    client: httpx.Client,
) -> None:
    response = client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"}
    )
    assert response.status_code == 400
    assert "nonsense" in response.text


def test_create_with_resource_type_not_matching_url_is_400(client: httpx.Client) -> None:
    response = client.post("/Observation", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 400


def test_dates_at_the_ends_of_the_calendar_are_stored_and_searchable(
    client: httpx.Client,
) -> None:
    # R4 dates run from 0001 to 9999; the intervals they cover end outside Python's datetime
    # range (9999 ends in year 10000), which once made these creates answer 500.
    family = unique()
    ids = []
    for birth in ("9999", "9999-12-31", "0001"):
        response = client.post(
            "/Patient", json=patient(name=[{"family": family}], birthDate=birth), headers=FHIR_JSON
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    found = client.get("/Patient", params={"family": family, "birthdate": "ge9999-06-01"})
    assert found.status_code == 200
    assert sorted(e["resource"]["id"] for e in found.json().get("entry", [])) == sorted(ids[:2])
