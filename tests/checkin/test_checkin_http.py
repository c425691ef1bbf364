"""The clinic check-in API against a real sending HealthMesh, over real HTTP, on two databases:
scan (photo or link), fetch, decrypt, validate, summary, matching, import, Provenance,
idempotency, and each error the front desk can meet."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from checkin_support import MRN, Clinic, Nodes, off_loop, reason, two_nodes
from joserfc.jwk import ECKey

from healthmesh.checkin.candidates import CHECKIN_SYSTEM
from healthmesh.share import qr, shc
from healthmesh.share.shl import decode

from conftest import ServerThread
from support import FHIR_JSON


@pytest.fixture(scope="module")
def nodes(admin_url: str, database_url: str, server: ServerThread) -> Iterator[Nodes]:
    with two_nodes(admin_url, database_url, server) as running:
        yield running


@pytest.fixture(scope="module")
def clinic(nodes: Nodes) -> Iterator[Clinic]:
    front_desk = Clinic(nodes.clinic)
    yield front_desk
    front_desk.http.close()


def _png(text: str) -> str:
    return base64.b64encode(qr.link_qr(text, "png")).decode()


def _entries(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle.get("entry") or [] if e["resource"]["resourceType"] == kind
    ]


def test_a_photo_of_the_qr_code_gives_the_one_screen_summary(nodes: Nodes, clinic: Clinic) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    answer = clinic.scan(image=_png(f"https://viewer.example/#{shlink}"))
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert decode(preview["text"]).url == decode(shlink).url
    summary = preview["summary"]
    assert summary["patient"]["name"] == f"Ada {sender.person.family}"
    assert summary["patient"]["birthDate"] == "1985-12-10"
    assert summary["coverage"][0]["payor"] == "Acme Health Plan"
    assert summary["coverage"][0]["memberId"].startswith("MEMBER-")
    assert summary["coverage"][0]["c4dic"] is True
    assert [p["name"] for p in summary["problems"]] == ["Asthma"]
    assert [m["name"] for m in summary["medications"]] == ["Salbutamol inhaler"]
    assert [a["name"] for a in summary["allergies"]] == ["Allergy to peanut"]
    assert [i["name"] for i in summary["immunizations"]] == ["Influenza vaccine"]
    titles = {d["title"] for d in summary["documents"]}
    assert "My asthma story" in titles
    story = next(d for d in summary["documents"] if d["title"] == "My asthma story")
    assert base64.b64decode(story["data"]).startswith(b"%PDF-")
    assert story["patientAsserted"] is True
    assert preview["candidates"] == [] and preview["suggested"] is None
    assert preview["warnings"] == []
    # The sender logged the access with the clinic's recipient name.
    accesses = sender.http.get(f"{sender.origin}/share/accesses").json()["accesses"]
    assert any(a["recipient"] == "HealthMesh clinic check-in" for a in accesses)


def test_import_as_a_new_patient_persists_the_data_with_provenance_and_reimport_adds_nothing(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    preview = clinic.scan(text=shlink).json()
    answer = clinic.import_(text=shlink, patient="new", reviewed=preview["digest"])
    assert answer.status_code == 200, answer.text
    done = answer.json()
    patient_ref = done["patient"]
    kinds = sorted(ref.split("/")[0] for ref in done["created"])
    assert kinds.count("Patient") == 1 and kinds.count("Provenance") == 1
    for kind in (
        "Condition",
        "MedicationStatement",
        "Medication",
        "AllergyIntolerance",
        "Immunization",
        "DocumentReference",
    ):
        assert kind in kinds, kinds
    assert "Coverage" not in kinds and "Organization" not in kinds  # not what CMS asks to persist
    condition = clinic.fhir(next(r for r in done["created"] if r.startswith("Condition/")))
    assert condition["subject"] == {"reference": patient_ref}
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "PATAST",
        "display": "patient asserted",
    } in condition["meta"]["security"]
    shot = clinic.fhir(next(r for r in done["created"] if r.startswith("Immunization/")))
    assert "reference" not in shot["performer"][0]["actor"]  # not imported: display only
    assert shot["performer"][0]["actor"]["display"].startswith("Welby")
    statement = clinic.fhir(
        next(r for r in done["created"] if r.startswith("MedicationStatement/"))
    )
    assert statement["medicationReference"]["reference"] in done["created"]
    provenance = clinic.fhir(done["provenance"])
    targets = {t["reference"] for t in provenance["target"]}
    assert targets == {r for r in done["created"] if not r.startswith("Provenance/")}
    patient_agent = provenance["agent"][0]
    assert patient_agent["role"][0]["coding"][0]["code"] == "PAT"
    assert patient_agent["who"] == {"reference": patient_ref}
    assert provenance["entity"][0]["role"] == "source"
    stories = clinic.fhir("DocumentReference", subject=patient_ref)
    pdfs = [e["resource"]["content"][0]["attachment"] for e in stories["entry"]]
    assert any(base64.b64decode(p["data"]).startswith(b"%PDF-") for p in pdfs)

    again = clinic.import_(text=shlink, patient="new", reviewed=preview["digest"]).json()
    assert again["created"] == []
    assert sorted(again["existing"]) == sorted(done["created"])
    conditions = clinic.fhir("Condition", subject=patient_ref)
    assert len(conditions["entry"]) == 1
    # The patient is now ours: the next scan finds them for certain, and suggests them.
    later = clinic.scan(text=shlink).json()
    assert later["suggested"] == patient_ref.split("/")[1]
    assert later["candidates"][0]["grade"] == "certain"


def test_an_existing_patient_with_the_same_identifier_is_suggested_and_receives_the_data(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    ours = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": sender.person.mrn}],
        "name": [{"family": sender.person.family, "given": ["Ada"]}],
        "gender": "female",
        "birthDate": sender.person.birth_date,
    }
    made = clinic.http.post("/fhir/Patient", json=ours, headers=FHIR_JSON)
    assert made.status_code == 201, made.text
    our_id = made.json()["id"]
    shlink, _ = sender.link()
    preview = clinic.scan(text=shlink).json()
    assert preview["suggested"] == our_id
    assert preview["candidates"][0]["why"].startswith("same identifier")
    done = clinic.import_(text=shlink, patient=our_id, reviewed=preview["digest"]).json()
    assert done["patient"] == f"Patient/{our_id}"
    assert not any(r.startswith("Patient/") for r in done["created"])
    allergies = clinic.fhir("AllergyIntolerance", patient=our_id)
    assert len(allergies["entry"]) == 1


def test_two_people_who_share_name_and_birth_date_are_both_shown_and_neither_is_guessed(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    for _ in range(2):
        twin = {
            "resourceType": "Patient",
            "name": [{"family": sender.person.family, "given": ["Ada"]}],
            "gender": "female",
            "birthDate": sender.person.birth_date,
        }
        assert clinic.http.post("/fhir/Patient", json=twin, headers=FHIR_JSON).status_code == 201
    shlink, _ = sender.link()
    preview = clinic.scan(text=shlink).json()
    assert [c["grade"] for c in preview["candidates"]] == ["possible", "possible"]
    assert preview["suggested"] is None
    refused = clinic.import_(text=shlink, reviewed=preview["digest"])
    assert refused.status_code == 400 and reason(refused) == "choose-patient"


def test_a_passcode_link_asks_for_it_and_counts_wrong_attempts(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    shlink, _ = sender.link(flag="P", passcode="4711")
    missing = clinic.scan(text=shlink)
    assert missing.status_code == 422 and reason(missing) == "passcode-required"
    wrong = clinic.scan(text=shlink, passcode="0000")
    assert wrong.status_code == 422 and reason(wrong) == "wrong-passcode"
    issue = wrong.json()["issue"][0]
    assert issue["extension"][0]["valueInteger"] == 9
    assert "9 attempt(s) left" in issue["diagnostics"]
    assert "4711" not in wrong.text and "0000" not in wrong.text
    right = clinic.scan(text=shlink, passcode="4711")
    assert right.status_code == 200, right.text
    done = clinic.import_(
        text=shlink, passcode="4711", patient="new", reviewed=right.json()["digest"]
    )
    assert done.status_code == 200, done.text


def test_an_expired_link_is_refused_before_anything_is_fetched(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    payload = decode(shlink)
    stale = type(payload)(url=payload.url, key=payload.key, exp=int(time.time()) - 60, flag="U")
    before = len(sender.http.get(f"{sender.origin}/share/accesses").json()["accesses"])
    answer = clinic.scan(text=stale.encode())
    assert answer.status_code == 410 and reason(answer) == "link-expired"
    assert answer.json()["resourceType"] == "OperationOutcome"
    after = len(sender.http.get(f"{sender.origin}/share/accesses").json()["accesses"])
    assert after == before


def test_a_revoked_link_says_it_is_no_longer_active_and_import_after_revocation_fails(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    shlink, link_id = sender.link()
    preview = clinic.scan(text=shlink).json()
    sender.revoke(link_id)
    answer = clinic.scan(text=shlink)
    assert answer.status_code == 410 and reason(answer) == "link-inactive"
    late = clinic.import_(text=shlink, patient="new", reviewed=preview["digest"])
    assert late.status_code == 410 and reason(late) == "link-inactive"


def test_content_other_than_what_was_reviewed_is_not_imported(nodes: Nodes, clinic: Clinic) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    answer = clinic.import_(text=shlink, patient="new", reviewed="0" * 64)
    assert answer.status_code == 409 and reason(answer) == "content-changed"


def test_an_unreadable_photo_is_a_friendly_422(clinic: Clinic) -> None:
    blank = base64.b64encode(qr.link_qr("x", "png")[:0] or _blank_png()).decode()
    answer = clinic.scan(image=blank)
    assert answer.status_code == 422 and reason(answer) == "unreadable-photo"
    not_image = clinic.scan(image=base64.b64encode(b"GIF89a....").decode())
    assert not_image.status_code == 422 and reason(not_image) == "unreadable-photo"


def _blank_png() -> bytes:
    import cv2
    import numpy as np

    ok, png = cv2.imencode(".png", np.full((200, 200), 255, np.uint8))
    assert ok
    return bytes(png)


def test_a_card_from_an_issuer_the_clinic_does_not_trust_is_refused(clinic: Clinic) -> None:
    key = ECKey.generate_key("P-256")
    kid = key.thumbprint()
    bundle = shc.card_bundle(
        [
            {"resourceType": "Patient", "name": [{"family": "X"}], "birthDate": "2000-01-01"},
            {
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "207"}]
                },
                "patient": {"reference": "resource:0"},
                "occurrenceDateTime": "2021-01-01",
            },
        ]
    )
    card = shc.sign(
        shc.card_claims("https://issuer.example", bundle, nbf=int(time.time())), key, kid
    )
    answer = clinic.scan(text=shc.numeric(card))
    assert answer.status_code == 422 and reason(answer) == "unknown-issuer"


def test_a_card_of_a_trusted_issuer_is_verified_shown_and_imported(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    issued = sender.http.post(f"{sender.origin}/share/cards", json={"kind": "immunization"})
    assert issued.status_code == 201, issued.text
    preview = clinic.scan(text=issued.json()["qr"])
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["cards"][0]["iss"] == f"{sender.origin}/shc"
    assert [i["name"] for i in body["summary"]["immunizations"]] != []
    done = clinic.import_(text=issued.json()["qr"], patient="new", reviewed=body["digest"])
    assert done.status_code == 200, done.text
    assert any(r.startswith("Immunization/") for r in done.json()["created"])


def test_staff_tokens_only_a_patient_token_or_none_is_refused(nodes: Nodes) -> None:
    origin = f"http://127.0.0.1:{nodes.clinic.server.port}"
    with httpx.Client(base_url=origin, timeout=30) as anonymous:
        answer = anonymous.post("/checkin/api/scan", json={"text": "shlink:/x"})
        assert answer.status_code == 401
        assert answer.json()["resourceType"] == "OperationOutcome"
    patient_token = nodes.clinic.token("patient/*.crs", patient="someone", client_id="p-app")
    with httpx.Client(
        base_url=origin, timeout=30, headers={"Authorization": f"Bearer {patient_token}"}
    ) as patient:
        answer = patient.post("/checkin/api/scan", json={"text": "shlink:/x"})
        assert answer.status_code == 403
    reader = nodes.clinic.token("user/*.rs", client_id="reader")
    with httpx.Client(
        base_url=origin, timeout=30, headers={"Authorization": f"Bearer {reader}"}
    ) as read_only:
        answer = read_only.post("/checkin/api/import", json={"text": "shlink:/x", "patient": "new"})
        assert answer.status_code == 403
        assert "create" in answer.json()["issue"][0]["diagnostics"]


def test_api_errors_are_outcomes_even_for_a_wrong_method_or_body(clinic: Clinic) -> None:
    for answer, status in (
        (clinic.http.get("/checkin/api/scan"), 405),
        (clinic.http.post("/checkin/api/scan", content=b"{not json"), 400),
        (clinic.http.post("/checkin/api/scan", json=["a list"]), 400),
        (clinic.scan(text="hello"), 400),
        (clinic.import_(patient="new"), 400),
    ):
        assert answer.status_code == status, answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_the_check_in_page_is_served_without_data_and_cannot_be_framed(nodes: Nodes) -> None:
    origin = f"http://127.0.0.1:{nodes.clinic.server.port}"
    page = httpx.get(f"{origin}/checkin", timeout=30)
    assert page.status_code == 200 and "Clinic check-in" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert CHECKIN_SYSTEM not in page.text


def test_the_import_and_the_candidate_searches_leave_audit_events(
    nodes: Nodes, clinic: Clinic
) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    preview = clinic.scan(text=shlink).json()
    done = clinic.import_(text=shlink, patient="new", reviewed=preview["digest"]).json()
    patient_id = done["patient"].split("/")[1]
    clinic.scan(text=shlink)  # now the identifier search finds the patient: a read of theirs
    # The trail is read by an auditor: a wildcard like the front desk's user/*.crs does not
    # reach other patients' audit events (docs/privacy.md).
    auditor = off_loop(clinic.node.token, "system/AuditEvent.rs", client_id="privacy-officer")
    answer = clinic.http.get(
        "/fhir/AuditEvent",
        params={"patient": patient_id, "_count": "100"},
        headers={"Authorization": f"Bearer {auditor}"},
    )
    assert answer.status_code == 200, answer.text
    events = answer.json()
    found = [e["resource"] for e in events.get("entry", [])]
    subtypes = {c.get("code") for e in found for c in e.get("subtype", [])}
    assert {"transaction", "search-type"} <= subtypes, subtypes
    assert all("front-desk" in str(e["agent"]) for e in found)
