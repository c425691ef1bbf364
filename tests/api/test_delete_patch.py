"""delete, conditional delete and JSON Patch (R4 http.html#delete, #patch)."""

from __future__ import annotations

import httpx

from support import FHIR_JSON, create, patient, unique

PATCH = {"Content-Type": "application/json-patch+json"}


def test_delete_answers_204_and_writes_a_tombstone_version(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.delete(f"/Patient/{created['id']}")
    assert response.status_code == 204
    assert response.headers["etag"] == 'W/"2"'
    history = client.get(f"/Patient/{created['id']}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]


def test_delete_twice_is_idempotent_and_unknown_is_404(client: httpx.Client) -> None:
    created = create(client, patient())
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    assert client.delete(f"/Patient/{unique()}").status_code == 404


def test_conditional_delete_removes_the_single_match(client: httpx.Client) -> None:
    mrn = unique()
    created = create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))
    assert client.delete("/Patient", params={"identifier": f"urn:mrn|{mrn}"}).status_code == 204
    assert client.get(f"/Patient/{created['id']}").status_code == 410


def test_conditional_delete_with_several_matches_is_412_and_deletes_nothing(
    client: httpx.Client,
) -> None:
    mrn = unique()
    ids = [
        create(client, patient(identifier=[{"system": "urn:mrn", "value": mrn}]))["id"]
        for _ in range(2)
    ]
    assert client.delete("/Patient", params={"identifier": mrn}).status_code == 412
    assert all(client.get(f"/Patient/{i}").status_code == 200 for i in ids)


def test_json_patch_changes_the_resource_and_makes_a_version(client: httpx.Client) -> None:
    created = create(client, patient())
    ops = [
        {"op": "replace", "path": "/gender", "value": "male"},
        {"op": "add", "path": "/active", "value": True},
    ]
    response = client.patch(f"/Patient/{created['id']}", json=ops, headers=PATCH)
    assert response.status_code == 200
    body = response.json()
    assert (body["gender"], body["active"], body["meta"]["versionId"]) == ("male", True, "2")


def test_json_patch_producing_an_invalid_resource_is_rejected(client: httpx.Client) -> None:
    created = create(client, patient())
    ops = [{"op": "add", "path": "/favouriteColour", "value": "blue"}]
    response = client.patch(f"/Patient/{created['id']}", json=ops, headers=PATCH)
    assert response.status_code == 400
    assert client.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"


def test_json_patch_that_cannot_apply_is_400(client: httpx.Client) -> None:
    created = create(client, patient())
    ops = [{"op": "remove", "path": "/nothing/here"}]
    assert client.patch(f"/Patient/{created['id']}", json=ops, headers=PATCH).status_code == 400
    assert (
        client.patch(f"/Patient/{created['id']}", json={"op": "x"}, headers=PATCH).status_code
        == 400
    )


def test_json_patch_with_stale_if_match_is_412(client: httpx.Client) -> None:
    created = create(client, patient())
    ops = [{"op": "replace", "path": "/gender", "value": "male"}]
    response = client.patch(
        f"/Patient/{created['id']}", json=ops, headers={**PATCH, "If-Match": 'W/"7"'}
    )
    assert response.status_code == 412


def test_patch_with_fhir_json_content_type_is_415(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.patch(f"/Patient/{created['id']}", json=[], headers=FHIR_JSON)
    assert response.status_code == 415
