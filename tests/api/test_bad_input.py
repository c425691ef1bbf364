"""Bad input gets a 4xx OperationOutcome saying what and where — never a 500, never a write."""

from __future__ import annotations

import httpx
import pytest

from support import FHIR_JSON, issue_expressions, patient


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/Patient", content=b'{"resourceType": "Patient",', headers=FHIR_JSON)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["issue"][0]["diagnostics"]


def test_json_that_is_not_an_object_is_400(client: httpx.Client) -> None:
    assert client.post("/Patient", content=b"[1,2]", headers=FHIR_JSON).status_code == 400


def test_xml_body_is_415(client: httpx.Client) -> None:
    response = client.post(
        "/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415


def test_unknown_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/Patient", content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    huge = patient(name=[{"family": "x" * 2_100_000}])
    assert client.post("/Patient", json=huge, headers=FHIR_JSON).status_code == 413


def test_invalid_resource_names_the_element_path(client: httpx.Client) -> None:
    body = patient(name=[{"family": "Ok"}, {"given": "not-an-array"}], birthDate="1970-13-99")
    response = client.post("/Patient", json=body, headers=FHIR_JSON)
    assert response.status_code == 400
    expressions = issue_expressions(response)
    assert any(e.startswith("Patient.name[1].given") for e in expressions)
    assert any(e.startswith("Patient.birthDate") for e in expressions)


def test_unknown_element_is_400(client: httpx.Client) -> None:
    response = client.post("/Patient", json=patient(shoeSize=9), headers=FHIR_JSON)
    assert response.status_code == 400
    assert any("shoeSize" in e for e in issue_expressions(response))


def test_nul_character_is_400_not_a_database_error(client: httpx.Client) -> None:
    body = b'{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}'
    assert client.post("/Patient", content=body, headers=FHIR_JSON).status_code == 400


def test_unknown_resource_type_in_url_is_404(client: httpx.Client) -> None:
    assert (
        client.post("/Unicorn", json={"resourceType": "Unicorn"}, headers=FHIR_JSON).status_code
        == 404
    )


def test_method_not_allowed_is_405(client: httpx.Client) -> None:
    assert client.put("/metadata", json={}, headers=FHIR_JSON).status_code == 405
    assert client.delete("/Patient/x/_history/1").status_code == 405


@pytest.mark.parametrize(
    "path", ["/Patient/1/extra/segments/here", "/Patient/$unknown-op", "/Patient/1/_history/1/more"]
)
def test_unknown_paths_are_4xx(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert 400 <= response.status_code < 500
    assert response.json()["resourceType"] == "OperationOutcome"


def test_post_without_body_is_400(client: httpx.Client) -> None:
    assert client.post("/Patient", headers=FHIR_JSON).status_code == 400


def test_metadata_lists_the_interactions_that_work(client: httpx.Client) -> None:
    statement = client.get("/metadata").json()
    assert (
        statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    )
    patient_entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    codes = {i["code"] for i in patient_entry["interaction"]}
    assert {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "create",
        "search-type",
        "history-instance",
    } <= codes
    names = {p["name"] for p in patient_entry["searchParam"]}
    assert {
        "_id",
        "_lastUpdated",
        "identifier",
        "name",
        "birthdate",
        "gender",
        "general-practitioner",
        "_tag",
    } <= names
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    types = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert types["code"] == "token"
    assert types["value-quantity"] == "quantity"
    assert types["component-code-value-quantity"] == "composite"
    location = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Location")
    assert "near" in {p["name"] for p in location["searchParam"]}
    assert "_query" not in {p["name"] for p in patient_entry["searchParam"]}
    assert {i["code"] for i in statement["rest"][0]["interaction"]} == {
        "transaction",
        "batch",
        "history-system",
        "search-system",
    }


@pytest.mark.parametrize(
    "url", ["/Patient?_id=%00", "/Patient?family=a%00b", "/Patient/a%00b", "/Patient?%00=1"]
)
def test_nul_in_url_is_400_not_a_database_error(client: httpx.Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (400, 404)
    assert response.json()["resourceType"] == "OperationOutcome"
