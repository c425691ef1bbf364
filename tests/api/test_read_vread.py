"""read and vread: R4 http.html#read, #vread."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime

import httpx

from support import FHIR_JSON, create, patient


def test_read_returns_the_stored_resource_with_etag_and_last_modified(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.get(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["etag"] == 'W/"1"'
    assert "GMT" in response.headers["last-modified"]
    assert response.json() == created


def test_read_of_unknown_id_is_404_with_operation_outcome(client: httpx.Client) -> None:
    response = client.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_read_of_unknown_type_is_404_naming_the_type(client: httpx.Client) -> None:
    response = client.get("/Patientt/1")
    assert response.status_code == 404
    assert "Patientt" in response.json()["issue"][0]["diagnostics"]


def test_read_with_malformed_id_is_400(client: httpx.Client) -> None:
    response = client.get("/Patient/" + "x" * 65)
    assert response.status_code == 400


def test_read_of_deleted_resource_is_410_gone(client: httpx.Client) -> None:
    created = create(client, patient())
    assert client.delete(f"/Patient/{created['id']}").status_code == 204
    response = client.get(f"/Patient/{created['id']}")
    assert response.status_code == 410
    assert response.json()["issue"][0]["code"] == "deleted"


def test_vread_returns_each_version(client: httpx.Client) -> None:
    created = create(client, patient(gender="female"))
    changed = dict(created, gender="male")
    assert (
        client.put(f"/Patient/{created['id']}", json=changed, headers=FHIR_JSON).status_code == 200
    )
    v1 = client.get(f"/Patient/{created['id']}/_history/1")
    v2 = client.get(f"/Patient/{created['id']}/_history/2")
    assert (v1.json()["gender"], v2.json()["gender"]) == ("female", "male")
    assert v1.headers["etag"] == 'W/"1"' and v2.headers["etag"] == 'W/"2"'
    assert client.get(f"/Patient/{created['id']}/_history/3").status_code == 404
    assert client.get(f"/Patient/{created['id']}/_history/abc").status_code == 404


def test_vread_of_a_delete_tombstone_is_410(client: httpx.Client) -> None:
    created = create(client, patient())
    client.delete(f"/Patient/{created['id']}")
    assert client.get(f"/Patient/{created['id']}/_history/2").status_code == 410
    assert client.get(f"/Patient/{created['id']}/_history/1").status_code == 200


def test_summary_true_keeps_summary_elements_and_marks_subsetted(client: httpx.Client) -> None:
    created = create(
        client,
        patient(
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>',
            },
            maritalStatus={"text": "M"},
        ),
    )
    summary = client.get(f"/Patient/{created['id']}", params={"_summary": "true"}).json()
    assert "name" in summary and "birthDate" in summary
    assert "text" not in summary and "maritalStatus" not in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])


def test_summary_data_drops_only_the_narrative(client: httpx.Client) -> None:
    created = create(
        client,
        patient(
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>',
            },
            maritalStatus={"text": "M"},
        ),
    )
    data = client.get(f"/Patient/{created['id']}", params={"_summary": "data"}).json()
    assert "text" not in data and data["maritalStatus"] == {"text": "M"}


def test_elements_keeps_the_named_elements_and_mandatory_ones(client: httpx.Client) -> None:
    created = create(client, patient())
    view = client.get(f"/Patient/{created['id']}", params={"_elements": "gender"}).json()
    assert set(view) == {"resourceType", "id", "meta", "gender"}


def test_bad_summary_value_is_400(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.get(f"/Patient/{created['id']}", params={"_summary": "maybe"})
    assert response.status_code == 400


def test_xml_only_accept_is_406_and_json_accept_is_honoured(client: httpx.Client) -> None:
    created = create(client, patient())
    url = f"/Patient/{created['id']}"
    assert client.get(url, headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get(url, params={"_format": "xml"}).status_code == 406
    plain = client.get(url, headers={"Accept": "application/json"})
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")


def _served(response: httpx.Response) -> tuple[int, str, str, str, bytes]:
    h = response.headers
    return (
        response.status_code,
        h["etag"],
        h["last-modified"],
        h["content-type"],
        response.content,
    )


def test_plain_read_and_vread_answer_exactly_as_the_general_path_does(
    client: httpx.Client,
) -> None:
    # Without parameters read and vread take the direct path (app.read_stored); `_format=json`
    # sends the same request through dispatch and render: both must give the same response.
    created = create(client, patient(gender="female"))
    url = f"/Patient/{created['id']}"
    assert client.put(url, json=dict(created, gender="male"), headers=FHIR_JSON).status_code == 200
    for path in (url, f"{url}/_history/1", f"{url}/_history/2"):
        direct, general = client.get(path), client.get(path, params={"_format": "json"})
        assert _served(direct) == _served(general), path
        assert direct.headers["content-length"] == str(len(direct.content))


def test_last_modified_is_the_imf_fixdate_of_meta_last_updated(client: httpx.Client) -> None:
    created = create(client, patient())
    response = client.get(f"/Patient/{created['id']}")
    stamp = datetime.fromisoformat(created["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert response.headers["last-modified"] == format_datetime(
        stamp.replace(microsecond=0), usegmt=True
    )


def test_direct_path_errors_match_the_general_path(client: httpx.Client) -> None:
    created = create(client, patient())
    client.delete(f"/Patient/{created['id']}")
    for path in (
        f"/Patient/{created['id']}",  # 410
        f"/Patient/{created['id']}/_history/2",  # 410, the tombstone
        f"/Patient/{created['id']}/_history/9",  # 404
        f"/Patient/{created['id']}/_history/x",  # 404
        "/Patientt/1/_history/1",  # 404, unknown type
        "/Patient/" + "x" * 65 + "/_history/1",  # 400
    ):
        direct, general = client.get(path), client.get(path, params={"_format": "json"})
        assert direct.status_code == general.status_code >= 400, path
        assert direct.json() == general.json(), path


def test_nul_in_a_read_path_is_400(client: httpx.Client) -> None:
    response = client.get("/Pat%00ient/1")
    assert response.status_code == 400
    assert "NUL" in response.json()["issue"][0]["diagnostics"]
