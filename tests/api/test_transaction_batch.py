"""batch and transaction Bundles (R4 http.html#transaction, #trules)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson

from support import FHIR_JSON, create, observation, patient, unique


def _tx(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_resolves_urn_uuid_references_to_new_ids(client: httpx.Client) -> None:
    pid = "urn:uuid:8d2b6c3e-0f0a-4c9e-9a53-5f6e2c1b7d40"
    response = client.post(
        "", json=_tx(_post(observation(pid)), _post(patient(), pid)), headers=FHIR_JSON
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "transaction-response"
    obs_loc, pat_loc = (e["response"]["location"] for e in bundle["entry"])
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created", "201 Created"]
    stored_obs = client.get("/" + obs_loc.split("/_history")[0]).json()
    assert stored_obs["subject"]["reference"] == pat_loc.split("/_history")[0]


def test_transaction_resolves_conditional_references(client: httpx.Client) -> None:
    mrn = unique()
    target = create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))
    obs = observation(f"Patient?identifier=urn:mrn|{mrn}")
    response = client.post("", json=_tx(_post(obs)), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"].split("/_history")[0]
    assert client.get(f"/{location}").json()["subject"]["reference"] == f"Patient/{target['id']}"


def test_conditional_reference_matching_nothing_fails_the_transaction(client: httpx.Client) -> None:
    obs = observation(f"Patient?identifier=urn:mrn|{unique()}")
    response = client.post("", json=_tx(_post(patient()), _post(obs)), headers=FHIR_JSON)
    assert response.status_code == 412


def test_transaction_with_one_invalid_entry_stores_nothing(client: httpx.Client) -> None:
    mrn = unique()
    good = patient(identifier=[{"system": "urn:mrn", "value": mrn}])
    bad = {"resourceType": "Observation", "status": "final"}  # code is required
    response = client.post("", json=_tx(_post(good), _post(bad)), headers=FHIR_JSON)
    assert response.status_code == 400
    assert any(
        e.startswith("Bundle.entry[1]")
        for issue in response.json()["issue"]
        for e in issue.get("expression", [])
    )
    assert client.get("/Patient", params={"identifier": mrn}).json()["total"] == 0


def test_transaction_runs_deletes_before_creates_before_updates_before_reads(
    client: httpx.Client,
) -> None:
    doomed = create(client, patient())
    kept = create(client, patient())
    entries = [
        {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
        {
            "resource": dict(kept, gender="male"),
            "request": {"method": "PUT", "url": f"Patient/{kept['id']}"},
        },
        _post(patient()),
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
    ]
    bundle = client.post("", json=_tx(*entries), headers=FHIR_JSON).json()
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["200 OK", "200 OK", "201 Created", "204 No Content"]
    assert bundle["entry"][0]["resource"]["gender"] == "male"  # the read ran after the update


def test_transaction_conditional_create_reuses_the_existing_resource(client: httpx.Client) -> None:
    mrn = unique()
    existing = create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))
    pid = "urn:uuid:11111111-2222-4333-8444-555555555555"
    entries = [
        _post(
            patient(identifier=[{"system": "urn:mrn", "value": mrn}]),
            pid,
            ifNoneExist=f"identifier=urn:mrn|{mrn}",
        ),
        _post(observation(pid)),
    ]
    bundle = client.post("", json=_tx(*entries), headers=FHIR_JSON).json()
    assert bundle["entry"][0]["response"]["status"] == "200 OK"
    obs_id = bundle["entry"][1]["response"]["location"].split("/")[1]
    assert (
        client.get(f"/Observation/{obs_id}").json()["subject"]["reference"]
        == f"Patient/{existing['id']}"
    )


def test_transaction_patch_entry_with_binary_json_patch(client: httpx.Client) -> None:
    created = create(client, patient())
    ops = base64.b64encode(
        orjson.dumps([{"op": "replace", "path": "/gender", "value": "other"}])
    ).decode()
    entry = {
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": ops,
        },
        "request": {"method": "PATCH", "url": f"Patient/{created['id']}"},
    }
    assert client.post("", json=_tx(entry), headers=FHIR_JSON).status_code == 200
    assert client.get(f"/Patient/{created['id']}").json()["gender"] == "other"


def test_transaction_touching_one_resource_twice_is_400(client: httpx.Client) -> None:
    created = create(client, patient())
    entries = [
        {"request": {"method": "DELETE", "url": f"Patient/{created['id']}"}},
        {"resource": created, "request": {"method": "PUT", "url": f"Patient/{created['id']}"}},
    ]
    assert client.post("", json=_tx(*entries), headers=FHIR_JSON).status_code == 400


def test_reference_to_an_unknown_urn_uuid_fails_the_transaction(client: httpx.Client) -> None:
    obs = observation("urn:uuid:99999999-9999-4999-8999-999999999999")
    assert client.post("", json=_tx(_post(obs)), headers=FHIR_JSON).status_code == 400


def test_prefer_representation_returns_resources_in_the_response(client: httpx.Client) -> None:
    bundle = client.post(
        "", json=_tx(_post(patient())), headers={**FHIR_JSON, "Prefer": "return=representation"}
    ).json()
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"


def test_batch_entries_succeed_or_fail_independently(client: httpx.Client) -> None:
    mrn = unique()
    good = patient(identifier=[{"system": "urn:mrn", "value": mrn}])
    entries = [
        _post(good),
        _post({"resourceType": "Patient", "gender": 5}),
        {"request": {"method": "GET", "url": "Patient/not-there"}},
    ]
    response = client.post("", json=_tx(*entries, kind="batch"), headers=FHIR_JSON)
    assert response.status_code == 200
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["201", "400", "404"]
    assert response.json()["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert client.get("/Patient", params={"identifier": mrn}).json()["total"] == 1


def test_bundle_of_other_type_is_400(client: httpx.Client) -> None:
    response = client.post("", json=_tx(kind="collection"), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Bundle.type" in response.text


def test_entry_without_request_is_400_naming_the_entry(client: httpx.Client) -> None:
    response = client.post("", json=_tx({"resource": patient()}), headers=FHIR_JSON)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]
