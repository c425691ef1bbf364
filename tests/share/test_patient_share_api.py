"""The patient's side of sharing over real HTTP: choosing contents, one-time links, errors.

Records are written through the open test server; the patient acts with a real token from the
node's authorization server; receivers resolve over HTTP and decrypt by hand (share_support).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from share_support import (
    Patients,
    independent_decrypt,
    origin,
    register_client,
    secured_node,
    summary_bundle,
    token,
)

from healthmesh.share.shl import decode

from conftest import ServerThread
from support import FHIR_JSON

PATAST = "PATAST"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PROBLEMS, ALLERGIES, IMMUNIZATIONS = "11450-4", "48765-2", "11369-6"


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


def _record(server: ServerThread) -> str:
    """A Patient with a problem, an allergy, an immunization and an insurance card."""
    pid = f"share-{uuid.uuid4().hex[:10]}"
    me = {"reference": f"Patient/{pid}"}
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "subject": me,
            "code": {"text": "Asthma"},
        },
        {"resourceType": "AllergyIntolerance", "patient": me, "code": {"text": "Peanuts"}},
        {
            "resourceType": "Immunization",
            "status": "completed",
            "patient": me,
            "vaccineCode": {"text": "Influenza vaccine"},
            "occurrenceDateTime": "2025-10-01",
        },
        {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": me,
            "subscriberId": "MEMBER-42",
            "payor": [{"display": "Example Health Plan"}],
        },
    ]
    with httpx.Client(base_url=server.base, timeout=30) as fhir:
        patient = {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"family": "Sharer", "given": ["Pat"]}],
            "gender": "female",
            "birthDate": "1980-02-03",
        }
        assert fhir.put(f"/Patient/{pid}", json=patient, headers=FHIR_JSON).status_code == 201
        for resource in resources:
            created = fhir.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
            assert created.status_code == 201, created.text
    return pid


def _received(created: dict[str, Any]) -> dict[str, Any]:
    """What a receiver gets: U-flag GET, decrypted independently."""
    link = decode(created["shlink"])
    got = httpx.get(link.url, params={"recipient": "Front desk"}, timeout=30)
    assert got.status_code == 200, got.text
    bundle: dict[str, Any] = orjson.loads(independent_decrypt(got.text, link.key)[0])
    return bundle


def _types(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["resourceType"] for e in bundle["entry"]}


def _outcome(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    diagnostics: str = body["issue"][0]["diagnostics"]
    return diagnostics


def test_a_share_of_chosen_sections_carries_those_and_the_patients_own_pdf_only(
    server: ServerThread, as_patient: Patients
) -> None:
    pid = _record(server)
    created = as_patient(pid).post(
        "/share/links",
        json={
            "flag": "U",
            "exp": int(time.time()) + 3600,
            "contents": {
                "sections": [PROBLEMS, IMMUNIZATIONS],
                "insurance": False,
                "rendering": False,
                "documents": [{"title": "My letter", "data": base64.b64encode(PDF).decode()}],
            },
        },
    )
    assert created.status_code == 201, created.text
    bundle = _received(created.json())
    assert _types(bundle) == {"Patient", "Condition", "Immunization", "DocumentReference"}
    (document,) = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    ]
    assert document["meta"]["security"][0]["code"] == PATAST
    assert document["description"] == "My letter"
    assert base64.b64decode(document["content"][0]["attachment"]["data"]) == PDF


def test_a_default_share_carries_the_whole_summary_insurance_card_and_rendering(
    server: ServerThread, as_patient: Patients
) -> None:
    pid = _record(server)
    created = as_patient(pid).post("/share/links", json={"flag": "U"})
    assert created.status_code == 201, created.text
    bundle = _received(created.json())
    assert {"Condition", "AllergyIntolerance", "Immunization", "Coverage"} <= _types(bundle)
    rendered = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
        and e["resource"]["type"]["coding"][0]["code"] == "60591-5"
    ]
    assert len(rendered) == 1


def test_a_share_holds_only_what_the_patients_token_may_read(
    server: ServerThread, node: ServerThread, database_url: str
) -> None:
    pid = _record(server)
    narrow = token(
        node, database_url, "patient/Patient.rs patient/Condition.rs launch/patient", patient=pid
    )
    with httpx.Client(
        base_url=origin(node), timeout=30, headers={"Authorization": f"Bearer {narrow}"}
    ) as app:
        created = app.post("/share/links", json={"flag": "U"})
        assert created.status_code == 201, created.text
        assert _types(_received(created.json())) & {"AllergyIntolerance", "Coverage"} == set()
    blind = token(node, database_url, "patient/Observation.rs launch/patient", patient=pid)
    refused = httpx.post(
        f"{origin(node)}/share/links",
        json={"flag": "U"},
        headers={"Authorization": f"Bearer {blind}"},
    )
    assert "Patient" in _outcome(refused, 403)


def test_a_one_time_link_is_served_once_by_direct_get_then_answers_404(
    server: ServerThread, as_patient: Patients
) -> None:
    pid = _record(server)
    me = as_patient(pid)
    created = me.post("/share/links", json={"flag": "U", "singleUse": True}).json()
    assert created["link"]["singleUse"] is True
    _received(created)
    url = decode(created["shlink"]).url
    assert httpx.get(url, params={"recipient": "Second clinic"}).status_code == 404
    assert httpx.post(url, json={"recipient": "Second clinic"}).status_code == 404
    link = me.get(f"/share/links/{created['link']['id']}").json()
    assert link["status"] == "used" and "used" in link
    outcomes = [
        a["outcome"] for a in me.get(f"/share/links/{link['id']}/accesses").json()["accesses"]
    ]
    assert sorted(outcomes) == ["inactive", "inactive", "ok"]


def test_concurrent_receivers_of_a_one_time_link_get_it_exactly_once(
    as_patient: Patients, node: ServerThread
) -> None:
    me = as_patient(f"pt-{uuid.uuid4().hex[:10]}")
    created = me.post("/share/links", json={"bundle": summary_bundle(), "singleUse": True})
    assert created.status_code == 201, created.text
    url = decode(created.json()["shlink"]).url

    def ask(i: int) -> httpx.Response:
        return httpx.post(
            url, json={"recipient": f"Clinic {i}", "embeddedLengthMax": 0}, timeout=30
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    served = [a for a in answers if a.status_code == 200]
    assert len(served) == 1 and sorted({a.status_code for a in answers}) == [200, 404]
    # the one manifest's file location still works: it was handed out by the consuming request
    location = served[0].json()["files"][0]["location"]
    assert httpx.get(location).status_code == 200


def test_bad_share_requests_are_refused_with_an_operation_outcome_naming_the_field(
    as_patient: Patients,
) -> None:
    me = as_patient(f"pt-{uuid.uuid4().hex[:10]}")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"flag": "L", "singleUse": True, "bundle": summary_bundle()}, "one-time"),
        ({"singleUse": "yes", "bundle": summary_bundle()}, "singleUse"),
        ({"contents": {"sections": ["0000-0"]}}, "contents.sections"),
        ({"contents": {"colour": "blue"}}, "contents.colour"),
        ({"contents": {"insurance": "no"}}, "contents.insurance"),
        (
            {"contents": {"documents": [{"data": base64.b64encode(b"GIF89a").decode()}]}},
            "contents.documents[0].data",
        ),
        ({"contents": {}, "bundle": summary_bundle()}, "not both"),
    ]
    for body, named in cases:
        assert named in _outcome(me.post("/share/links", json=body), 400), body


def test_sharing_needs_a_patient_token_and_never_reaches_another_patients_links(
    as_patient: Patients, node: ServerThread, database_url: str
) -> None:
    ada, bob = as_patient(f"pt-{uuid.uuid4().hex[:10]}"), as_patient(f"pt-{uuid.uuid4().hex[:10]}")
    link_id = ada.post("/share/links", json={"bundle": summary_bundle()}).json()["link"]["id"]
    for method, path in [
        ("GET", f"/share/links/{link_id}"),
        ("GET", f"/share/links/{link_id}/accesses"),
        ("POST", f"/share/links/{link_id}/pause"),
        ("POST", f"/share/links/{link_id}/resume"),
        ("POST", f"/share/links/{link_id}/revoke"),
    ]:
        _outcome(bob.request(method, path), 404)
    unknown = "A" * 43
    assert _outcome(ada.get(f"/share/links/{unknown}"), 404) == _outcome(
        bob.get(f"/share/links/{link_id}"), 404
    )  # another's link and no link read the same
    assert ada.get(f"/share/links/{link_id}").json()["status"] == "active"
    for path in ("/share/links", "/share/contents", "/share/accesses"):
        _outcome(httpx.get(f"{origin(node)}{path}"), 401)
    system = token(node, database_url, "system/*.rs")
    refused = httpx.get(
        f"{origin(node)}/share/links", headers={"Authorization": f"Bearer {system}"}
    )
    assert "patient in context" in _outcome(refused, 403)


def test_the_section_choices_are_the_ips_sections(as_patient: Patients) -> None:
    sections = as_patient(f"pt-{uuid.uuid4().hex[:10]}").get("/share/contents").json()["sections"]
    codes = [s["code"] for s in sections]
    assert codes[:3] == [PROBLEMS, ALLERGIES, "10160-0"]
    assert all(s["title"] for s in sections) and len(codes) == len(set(codes)) == 11


def test_the_page_is_served_with_a_strict_content_security_policy(node: ServerThread) -> None:
    page = httpx.get(f"{origin(node)}/share")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert f'data-fhir="{node.base}"' in page.text
    script = httpx.get(f"{origin(node)}/share/page.js")
    assert script.status_code == 200 and "code_challenge_method" in script.text
    assert httpx.get(f"{origin(node)}/share/page.css").status_code == 200
