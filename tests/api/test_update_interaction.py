"""update, create-on-update, conditional update and version-aware updates (R4 http.html#update)."""

from __future__ import annotations

import httpx

from support import FHIR_JSON, create, patient, unique


def test_update_makes_a_new_version(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.put(
        f"/Patient/{created['id']}", json=dict(created, gender="male"), headers=FHIR_JSON
    )
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'


def test_update_with_unchanged_content_makes_no_new_version(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.put(f"/Patient/{created['id']}", json=created, headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "1"


def test_update_of_unknown_id_creates_it_with_the_client_id(client: httpx.Client) -> None:
    id = unique("client")
    response = client.put(f"/Patient/{id}", json=patient(id=id), headers=FHIR_JSON)
    assert response.status_code == 201
    assert client.get(f"/Patient/{id}").json()["id"] == id


def test_update_without_id_in_body_is_400(client: httpx.Client) -> None:
    response = client.put(f"/Patient/{unique()}", json=patient(), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "Patient.id" in response.json()["issue"][0]["expression"]


def test_update_with_id_differing_from_url_is_400(client: httpx.Client) -> None:
    response = client.put(f"/Patient/{unique()}", json=patient(id="other"), headers=FHIR_JSON)
    assert response.status_code == 400


def test_if_match_with_current_version_succeeds_and_stale_version_is_412(
    client: httpx.Client,
) -> None:
    created = create(client, patient())
    url = f"/Patient/{created['id']}"
    ok = client.put(
        url, json=dict(created, gender="male"), headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert ok.status_code == 200
    stale = client.put(
        url, json=dict(created, gender="other"), headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert client.get(url).json()["gender"] == "male"


def test_malformed_if_match_is_400(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.put(
        f"/Patient/{created['id']}", json=created, headers={**FHIR_JSON, "If-Match": "yesterday"}
    )
    assert response.status_code == 400


def test_update_of_a_deleted_resource_brings_it_back_as_a_new_version(client: httpx.Client) -> None:
    created = create(client, patient())
    client.delete(f"/Patient/{created['id']}")
    response = client.put(f"/Patient/{created['id']}", json=created, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


def test_conditional_update_updates_the_single_match(client: httpx.Client) -> None:
    mrn = unique()
    created = create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))
    body = patient(identifier=[{"system": "urn:mrn", "value": mrn}], gender="male")
    response = client.put(
        "/Patient", params={"identifier": f"urn:mrn|{mrn}"}, json=body, headers=FHIR_JSON
    )
    assert response.status_code == 200
    assert response.json()["id"] == created["id"] and response.json()["gender"] == "male"


def test_conditional_update_with_no_match_creates(client: httpx.Client) -> None:
    mrn = unique()
    body = patient(identifier=[{"system": "urn:mrn", "value": mrn}])
    response = client.put(
        "/Patient", params={"identifier": f"urn:mrn|{mrn}"}, json=body, headers=FHIR_JSON
    )
    assert response.status_code == 201


def test_conditional_update_with_several_matches_is_412(client: httpx.Client) -> None:
    mrn = unique()
    for _ in range(2):
        create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))
    response = client.put("/Patient", params={"identifier": mrn}, json=patient(), headers=FHIR_JSON)
    assert response.status_code == 412
