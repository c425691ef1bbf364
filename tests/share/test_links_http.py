"""SMART Health Links over real HTTP: a patient shares, a receiver resolves, the patient sees.

The round trip goes through an independent path: our QR PNG is read back with OpenCV, the
manifest fetched over HTTP like any receiver would, and the file decrypted by hand with
`cryptography` (not the joserfc code the server used).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from share_support import (
    Patients,
    decode_qr_png,
    independent_decrypt,
    origin,
    register_client,
    secured_node,
    summary_bundle,
)

from healthmesh.auth.grant import AccessGrant
from healthmesh.share.shl import decode

from conftest import ServerThread


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    with secured_node(database_url) as running:
        register_client(database_url)
        yield running


@pytest.fixture
def as_patient(node: ServerThread, database_url: str) -> Iterator[Patients]:
    patients = Patients(node, database_url)
    yield patients
    patients.close()


def _patient() -> str:
    return f"pt-{uuid.uuid4().hex[:10]}"


def _create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("bundle", summary_bundle())
    response = client.post("/share/links", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _manifest(url: str, **body: Any) -> httpx.Response:
    body.setdefault("recipient", "Dr. Receiver, Example Clinic")
    return httpx.post(url, json=body, timeout=30)


def test_shared_bundle_survives_qr_manifest_and_independent_decryption(
    as_patient: Patients,
) -> None:
    ada = as_patient(_patient())
    created = _create(ada, label="For my check-in", exp=int(time.time()) + 3600)
    png = ada.post(
        "/share/qr", json={"shlink": created["shlink"], "format": "png", "viewer": False}
    )
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    scanned = decode_qr_png(png.content)
    assert scanned == created["shlink"]

    link = decode(scanned)
    assert len(link.url) <= 128
    assert link.label == "For my check-in"
    response = _manifest(link.url)
    assert response.status_code == 200, response.text
    files = response.json()["files"]
    assert [f["contentType"] for f in files] == ["application/fhir+json"]
    location = files[0]["location"]
    fetched = httpx.get(location, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"].startswith("application/jose")
    plaintext, header = independent_decrypt(fetched.text, link.key)
    assert header["alg"] == "dir"
    assert header["enc"] == "A256GCM"
    assert header["cty"] == "application/fhir+json"
    assert orjson.loads(plaintext) == summary_bundle()


def test_viewer_url_qr_carries_the_link_behind_the_configured_viewer(as_patient: Patients) -> None:
    ada = as_patient(_patient())
    created = _create(ada)
    assert created["viewerUrl"] == f"https://viewer.example/#{created['shlink']}"
    svg = ada.post("/share/qr", json={"shlink": created["shlink"], "format": "svg"})
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content
    png = ada.post("/share/qr", json={"shlink": created["shlink"], "viewer": True})
    assert decode_qr_png(png.content) == created["viewerUrl"]


def test_embedded_length_max_embeds_small_files_and_locates_large_ones(
    as_patient: Patients,
) -> None:
    ada = as_patient(_patient())
    link = decode(_create(ada)["shlink"])
    big = _manifest(link.url, embeddedLengthMax=1_000_000).json()["files"][0]
    small = _manifest(link.url, embeddedLengthMax=10).json()["files"][0]
    assert "embedded" in big and "location" not in big
    assert "location" in small and "embedded" not in small
    assert (
        independent_decrypt(big["embedded"], link.key)[0]
        == independent_decrypt(httpx.get(small["location"]).text, link.key)[0]
    )


def test_files_are_encrypted_with_a_fresh_iv_and_the_key_thumbprint_as_kid(
    as_patient: Patients,
) -> None:
    from healthmesh.share.jwe import key_id

    ada = as_patient(_patient())
    one, two = decode(_create(ada)["shlink"]), decode(_create(ada)["shlink"])
    files = [_manifest(link.url, embeddedLengthMax=10**7).json()["files"][0] for link in (one, two)]
    ivs = {f["embedded"].split(".")[2] for f in files}
    assert len(ivs) == 2
    assert one.key != two.key
    _, header = independent_decrypt(files[0]["embedded"], one.key)
    assert header["kid"] == key_id(one.key)
    assert header["zip"] == "DEF"


def test_location_urls_expire_within_an_hour_and_die_with_the_link(
    as_patient: Patients, database_url: str
) -> None:
    ada = as_patient(_patient())
    created = _create(ada)
    link = decode(created["shlink"])
    location = _manifest(link.url).json()["files"][0]["location"]
    with psycopg.connect(database_url) as conn:
        lifetime = conn.execute(
            "SELECT max(extract(epoch FROM expires_at - now())) FROM shl_location WHERE link_id = %s",
            (created["link"]["id"],),
        ).fetchone()
    assert lifetime is not None
    assert 0 < float(lifetime[0]) <= 3600
    assert httpx.get(location).status_code == 200
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE shl_location SET expires_at = now() - interval '1 second' WHERE link_id = %s",
            (created["link"]["id"],),
        )
    assert httpx.get(location).status_code == 404
    fresh = _manifest(link.url).json()["files"][0]["location"]
    assert ada.post(f"/share/links/{created['link']['id']}/revoke").status_code == 200
    assert httpx.get(fresh).status_code == 404


def test_u_flag_link_answers_its_single_file_to_a_get_with_recipient(as_patient: Patients) -> None:
    ada = as_patient(_patient())
    created = _create(ada, flag="U", exp=int(time.time()) + 600)
    link = decode(created["shlink"])
    assert link.flag == "U"
    got = httpx.get(link.url, params={"recipient": "Front desk"})
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/jose")
    assert orjson.loads(independent_decrypt(got.text, link.key)[0]) == summary_bundle()
    assert httpx.get(link.url).status_code == 400  # recipient is required
    plain = decode(_create(ada)["shlink"])
    assert httpx.get(plain.url, params={"recipient": "x"}).status_code == 405


def test_u_with_p_label_over_80_and_past_exp_are_refused_at_creation(as_patient: Patients) -> None:
    ada = as_patient(_patient())
    bundle = summary_bundle()
    cases: list[dict[str, Any]] = [
        {"flag": "UP", "passcode": "1234"},
        {"label": "x" * 81},
        {"exp": int(time.time()) - 10},
        {"flag": "P"},  # P needs a passcode
        {"flag": "X"},
    ]
    for case in cases:
        response = ada.post("/share/links", json={"bundle": bundle, **case})
        assert response.status_code == 400, case
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["code"] == "invalid"
    bad_bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "gender": 7}}],
    }
    refused = ada.post("/share/links", json={"bundle": bad_bundle})
    assert refused.status_code == 400
    assert "Bundle.entry[0].resource.gender" in refused.json()["issue"][0]["diagnostics"]
    assert ada.post("/share/links", json={}).status_code == 400  # no $summary source yet


def test_expired_paused_and_revoked_links_answer_404_and_resume_works(
    as_patient: Patients, database_url: str
) -> None:
    ada = as_patient(_patient())
    created = _create(ada)
    link_id, url = created["link"]["id"], decode(created["shlink"]).url
    assert _manifest(url).status_code == 200
    assert ada.post(f"/share/links/{link_id}/pause").json()["status"] == "paused"
    assert _manifest(url).status_code == 404
    assert ada.post(f"/share/links/{link_id}/resume").json()["status"] == "active"
    assert _manifest(url).status_code == 200
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE shl_link SET exp = now() - interval '1 second' WHERE id = %s", (link_id,)
        )
    assert _manifest(url).status_code == 404
    assert ada.get(f"/share/links/{link_id}").json()["status"] == "expired"

    other = _create(ada)
    other_id, other_url = other["link"]["id"], decode(other["shlink"]).url
    assert ada.post(f"/share/links/{other_id}/revoke").json()["status"] == "revoked"
    assert _manifest(other_url).status_code == 404
    assert ada.post(f"/share/links/{other_id}/resume").status_code == 400  # revocation is final
    assert _manifest(other_url).status_code == 404
    assert _manifest(url.rsplit("/", 1)[0] + "/" + "A" * 43).status_code == 404


def test_every_access_is_listed_for_the_owner_with_recipient_time_and_outcome(
    as_patient: Patients,
) -> None:
    ada = as_patient(_patient())
    created = _create(ada, flag="P", passcode="4711")
    link_id, url = created["link"]["id"], decode(created["shlink"]).url
    assert _manifest(url, recipient="Clinic A", passcode="0000").status_code == 401
    ok = _manifest(url, recipient="Clinic B", passcode="4711")
    assert ok.status_code == 200
    assert httpx.get(ok.json()["files"][0]["location"]).status_code == 200
    accesses = ada.get(f"/share/links/{link_id}/accesses").json()["accesses"]
    seen = sorted((a["recipient"], a["kind"], a["outcome"]) for a in accesses)
    assert seen == [
        ("Clinic A", "manifest", "wrong_passcode"),
        ("Clinic B", "file", "ok"),
        ("Clinic B", "manifest", "ok"),
    ]
    assert all(a["time"] for a in accesses)
    everything = ada.get("/share/accesses").json()["accesses"]
    assert {a["link"] for a in everything} == {link_id}
    listed = ada.get("/share/links").json()["links"]
    assert [entry["id"] for entry in listed] == [link_id]
    assert listed[0]["accessCount"] == 3
    assert "key" not in listed[0]


def test_a_patient_reaches_only_their_own_links(as_patient: Patients, node: ServerThread) -> None:
    ada, bob = as_patient(_patient()), as_patient(_patient())
    created = _create(ada)
    link_id = created["link"]["id"]
    for method, path in [
        ("GET", f"/share/links/{link_id}"),
        ("GET", f"/share/links/{link_id}/accesses"),
        ("POST", f"/share/links/{link_id}/revoke"),
        ("POST", f"/share/links/{link_id}/pause"),
    ]:
        response = bob.request(method, path)
        assert response.status_code == 404, path
    assert bob.get("/share/links").json()["links"] == []
    assert _manifest(decode(created["shlink"]).url).status_code == 200  # still active
    anonymous = httpx.get(f"{origin(node)}/share/links")
    assert anonymous.status_code == 401
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    assert anonymous.json()["issue"][0]["code"] == "login"
    assert "Bearer" in anonymous.headers["www-authenticate"]
    forged = httpx.get(f"{origin(node)}/share/links", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code == 401


def test_manifest_requests_need_a_recipient_and_well_formed_json(as_patient: Patients) -> None:
    url = decode(_create(as_patient(_patient()))["shlink"]).url
    assert httpx.post(url, json={}).status_code == 400
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, json={"recipient": "x", "embeddedLengthMax": -1}).status_code == 400
    assert httpx.post(url, json={"recipient": "x" * 1000}).status_code == 400
    preflight = httpx.options(url, headers={"Origin": "https://viewer.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_long_term_links_polled_too_often_get_429_with_retry_after(as_patient: Patients) -> None:
    url = decode(_create(as_patient(_patient()), flag="L")["shlink"]).url
    answers = [_manifest(url) for _ in range(6)]  # the node allows 5 per window
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[0].json()["status"] == "can-change"
    assert 0 < int(answers[-1].headers["retry-after"]) <= 3600


class _Summaries:
    """A stand-in for the IPS work's $summary: the fixture, named after the patient."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def summary(self, grant: AccessGrant, contents: object = None) -> dict[str, Any] | None:
        assert grant.patient is not None
        self.asked.append(grant.patient)
        return summary_bundle()


def test_a_share_without_a_bundle_takes_the_patients_summary_from_the_hook(
    node: ServerThread, as_patient: Patients
) -> None:
    app: Any = node.server.config.app
    sharing = app.state.share
    patient = _patient()
    source = _Summaries()
    sharing.summaries = source
    try:
        created = as_patient(patient).post("/share/links", json={"flag": "U"})
    finally:
        from healthmesh.share.service import NoSummaries

        sharing.summaries = NoSummaries()
    assert created.status_code == 201, created.text
    assert source.asked == [patient]
    link = decode(created.json()["shlink"])
    got = httpx.get(link.url, params={"recipient": "Front desk"})
    assert orjson.loads(independent_decrypt(got.text, link.key)[0]) == summary_bundle()
