"""Malformed, contradictory and misplaced Consents, written through the API (issue #5, "Bad input").

Each is refused with a 4xx OperationOutcome that says why and names the element, stores
nothing (no Consent, no rule: the patient's record is shared exactly as before), and a
Consent can only be written for one's own record — or by an operator with ``system/`` scopes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from policy_matrix_data import (
    FUTURE,
    PAST,
    app,
    category,
    consent,
    labels,
    purpose,
    resource_class,
    rid,
    transaction,
)

from healthmesh.fhir.consent import CLIENT_ID_SYSTEM, PURPOSE_SYSTEM
from secured import SecuredNode, secured_node

from support import FHIR_JSON

ANN, BEN = rid("ann"), rid("ben")
MARKETING = purpose("HMARKT")


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    records: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": ANN},
        {"resourceType": "Patient", "id": BEN},
        {
            "resourceType": "Observation",
            "id": f"{ANN}-obs",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{ANN}"},
        },
    ]
    bundle = transaction(records)
    with secured_node(database_url) as running:
        with running.client("system/*.cruds", client_id=rid("bad-loader")) as admin:
            assert admin.post("", json=bundle, headers=FHIR_JSON).status_code == 200
        yield running


@pytest.fixture(scope="module")
def ann(node: SecuredNode) -> Iterator[httpx.Client]:
    with node.client("patient/*.cruds", client_id=rid("ann-app"), patient=ANN) as c:
        yield c


@pytest.fixture(scope="module")
def clinic(node: SecuredNode) -> Iterator[httpx.Client]:
    with node.client("system/*.rs", client_id=rid("bad-clinic"), purpose_of_use="TREAT") as c:
        yield c


def _shared(clinic: httpx.Client) -> bool:
    return clinic.get(f"/Observation/{ANN}-obs").status_code == 200


def _consents_of(ann: httpx.Client) -> int:
    return len(ann.get("/Consent", params={"patient": ANN}).json().get("entry", []))


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, Consent, the element named, a word the diagnostics must contain)
    (
        "base provision neither permit nor deny",
        consent(ANN, {"type": "maybe"}),
        "Consent.provision.type",
        "permit",
    ),
    (
        "nested provision neither permit nor deny",
        consent(ANN, {"type": "permit", "provision": [{"type": "perhaps"}]}),
        "Consent.provision.provision[0].type",
        "permit",
    ),
    (
        "active without a provision",
        {k: v for k, v in consent(ANN, {}).items() if k != "provision"},
        "Consent.provision",
        "provision",
    ),
    (
        "patient that is not a Patient",
        {**consent(ANN, {"type": "deny"}), "patient": {"reference": f"Group/{ANN}"}},
        "Consent.patient",
        "Patient",
    ),
    (
        "period ending before it starts",
        consent(ANN, {"type": "deny", "period": {"start": "2026-05-01", "end": "2026-04-01"}}),
        "Consent.provision.period",
        "ends before",
    ),
    (
        "nested period outside its parent's",
        consent(
            ANN,
            {"type": "permit", "period": PAST, "provision": [{"type": "deny", "period": FUTURE}]},
        ),
        "Consent.provision.provision[0].period",
        "parent",
    ),
    (
        "a permit for marketing",
        consent(ANN, {"type": "permit", "purpose": MARKETING}),
        "Consent.provision.purpose",
        "marketing",
    ),
    (
        "a nested permit for marketing (an exception to a marketing deny)",
        consent(
            ANN, {"type": "deny", "purpose": MARKETING, "provision": [{"code": category("labs")}]}
        ),
        "Consent.provision.provision[0].purpose",
        "marketing",
    ),
    (
        "an unknown data category",
        consent(ANN, {"type": "deny", "code": category("horoscopes")}),
        "Consent.provision.code[0]",
        "data categor",
    ),
    (
        "a class that is not a resource type",
        consent(ANN, {"type": "deny", "class": resource_class("Horoscope")}),
        "Consent.provision.class[0]",
        "resource type",
    ),
    (
        "an actor without a reference",
        consent(
            ANN,
            {
                "type": "deny",
                "actor": [{"role": app("x")["role"], "reference": {"display": "someone"}}],
            },
        ),
        "Consent.provision.actor[0].reference",
        "reference",
    ),
    (
        "an actor identifier of an unknown system",
        consent(
            ANN,
            {
                "type": "deny",
                "actor": [
                    {
                        "role": app("x")["role"],
                        "reference": {"identifier": {"system": "urn:other", "value": "x"}},
                    }
                ],
            },
        ),
        "Consent.provision.actor[0].reference",
        CLIENT_ID_SYSTEM,
    ),
    (
        "a purpose of another code system",
        consent(ANN, {"type": "deny", "purpose": [{"system": "urn:other", "code": "TREAT"}]}),
        "Consent.provision.purpose",
        PURPOSE_SYSTEM,
    ),
    (
        "a nested actor outside its parent's",
        consent(ANN, {"type": "deny", "actor": [app("a")], "provision": [{"actor": [app("b")]}]}),
        "Consent.provision.provision[0].actor",
        "never apply",
    ),
    (
        "a nested category outside its parent's",
        consent(
            ANN,
            {
                "type": "permit",
                "code": category("labs"),
                "provision": [{"code": category("claims")}],
            },
        ),
        "Consent.provision.provision[0].code",
        "never apply",
    ),
    (
        "a nested label outside its parent's",
        consent(
            ANN,
            {
                "type": "permit",
                "securityLabel": labels("HIV"),
                "provision": [{"securityLabel": labels("ETH")}],
            },
        ),
        "Consent.provision.provision[0].securityLabel",
        "never apply",
    ),
    (
        # Ignored, a permit of one resource would permit the app everything.
        "a permit of particular resources (provision.data)",
        consent(
            ANN,
            {
                "type": "deny",
                "provision": [
                    {
                        "type": "permit",
                        "data": [
                            {"meaning": "instance", "reference": {"reference": "Observation/x"}}
                        ],
                    }
                ],
            },
        ),
        "Consent.provision.provision[0].data",
        "cannot enforce data",
    ),
    (
        "a provision about when the data was recorded (provision.dataPeriod)",
        consent(ANN, {"type": "permit", "dataPeriod": {"start": "2020-01-01"}}),
        "Consent.provision.dataPeriod",
        "cannot enforce dataPeriod",
    ),
    (
        # Read as a rule of access, a deny of correcting data would deny reading it.
        "a provision about an action other than access, use or disclosure",
        consent(
            ANN,
            {
                "type": "deny",
                "action": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                "code": "correct",
                            }
                        ]
                    }
                ],
            },
        ),
        "Consent.provision.action[0]",
        "enforces the actions access, disclose, use",
    ),
    (
        "a structurally invalid provision (R4 definitions)",
        consent(ANN, {"type": "deny", "period": {"start": "not a date"}}),
        "Consent.provision.period.start",
        "",
    ),
]


@pytest.mark.parametrize(("body", "where", "why"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_consent_is_refused_saying_why_and_where_and_stores_nothing(
    ann: httpx.Client, clinic: httpx.Client, body: dict[str, Any], where: str, why: str
) -> None:
    before = _consents_of(ann)
    for response in (
        ann.post("/Consent", json=body, headers=FHIR_JSON),
        ann.put(f"/Consent/{rid('bad')}", json={**body, "id": rid("bad")}, headers=FHIR_JSON),
    ):
        assert response.status_code in (400, 422), response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        named = [i for i in outcome["issue"] if where in i.get("expression", [])]
        assert named, outcome
        assert why in " ".join(i["diagnostics"] for i in named), outcome
    assert _consents_of(ann) == before
    assert _shared(clinic)  # nothing of it was enforced


def test_a_bad_consent_in_a_transaction_fails_it_whole(
    ann: httpx.Client, clinic: httpx.Client
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": consent(ANN, {"type": "deny"}),
                "request": {"method": "POST", "url": "Consent"},
            },
            {
                "resource": consent(ANN, {"type": "permit", "purpose": MARKETING}),
                "request": {"method": "POST", "url": "Consent"},
            },
        ],
    }
    before = _consents_of(ann)
    response = ann.post("", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert "Bundle.entry[1].resource.provision.purpose" in str(response.json())
    assert _consents_of(ann) == before and _shared(clinic)  # the opt-out was not kept either


def test_an_update_cannot_turn_a_good_consent_bad(ann: httpx.Client, clinic: httpx.Client) -> None:
    created = ann.post(
        "/Consent",
        json=consent(ANN, {"type": "deny", "code": category("claims")}),
        headers=FHIR_JSON,
    )
    assert created.status_code == 201, created.text
    good = created.json()
    try:
        bad = {**good, "provision": {"type": "deny", "code": category("horoscopes")}}
        refused = ann.put(f"/Consent/{good['id']}", json=bad, headers=FHIR_JSON)
        assert refused.status_code == 400
        assert ann.get(f"/Consent/{good['id']}").json()["meta"]["versionId"] == "1"
    finally:
        ann.delete(f"/Consent/{good['id']}")


# --- whose record -------------------------------------------------------------------------


def test_a_patient_cannot_write_update_or_delete_a_consent_for_someone_else(
    node: SecuredNode, ann: httpx.Client, clinic: httpx.Client
) -> None:
    assert (
        ann.post("/Consent", json=consent(BEN, {"type": "deny"}), headers=FHIR_JSON).status_code
        == 403
    )
    with node.client("patient/*.cruds", client_id=rid("ben-app"), patient=BEN) as ben:
        theirs = ben.post(
            "/Consent",
            json=consent(BEN, {"type": "deny", "code": category("claims")}),
            headers=FHIR_JSON,
        )
        assert theirs.status_code == 201, theirs.text
        ben_consent = theirs.json()
        # Ann can neither change Ben's Consent, nor move one of hers to Ben, nor delete his.
        hijack = {**ben_consent, "provision": {"type": "permit"}}
        # (405: to Ann, an id she cannot see is one she may not choose: update-as-create)
        assert (
            ann.put(f"/Consent/{ben_consent['id']}", json=hijack, headers=FHIR_JSON).status_code
            == 405
        )
        assert ann.delete(f"/Consent/{ben_consent['id']}").status_code in (403, 404)
        mine = ann.post(
            "/Consent",
            json=consent(ANN, {"type": "deny", "code": category("claims")}),
            headers=FHIR_JSON,
        )
        assert mine.status_code == 201
        moved = {**mine.json(), "patient": {"reference": f"Patient/{BEN}"}}
        assert ann.put(f"/Consent/{moved['id']}", json=moved, headers=FHIR_JSON).status_code == 403
        assert ann.delete(f"/Consent/{moved['id']}").status_code in (200, 204)
        kept = ben.get(f"/Consent/{ben_consent['id']}").json()
        assert kept["meta"]["versionId"] == "1" and kept["provision"]["type"] == "deny"
        assert ben.delete(f"/Consent/{ben_consent['id']}").status_code in (200, 204)


def test_an_operator_with_system_scopes_may_write_a_patients_consent(
    node: SecuredNode, clinic: httpx.Client
) -> None:
    with node.client("system/Consent.cruds", client_id=rid("operator")) as operator:
        written = operator.post("/Consent", json=consent(ANN, {"type": "deny"}), headers=FHIR_JSON)
        assert written.status_code == 201, written.text
        assert not _shared(clinic)
        assert operator.delete(f"/Consent/{written.json()['id']}").status_code in (200, 204)
    assert _shared(clinic)


def test_a_practitioner_cannot_write_or_remove_a_patients_privacy_consent(
    node: SecuredNode, ann: httpx.Client, clinic: httpx.Client
) -> None:
    # A recipient must not be able to grant itself access: user/ scopes of someone other
    # than the patient write other Consents, never a patient-privacy one.
    doctor = node.client(
        "user/*.cruds",
        client_id=rid("ehr"),
        fhir_user="Practitioner/dr-bad",
        purpose_of_use="TREAT",
    )
    with doctor:
        refused = doctor.post("/Consent", json=consent(ANN, {"type": "deny"}), headers=FHIR_JSON)
        assert refused.status_code == 403, refused.text
        assert _shared(clinic)
        research = {**consent(ANN, {"type": "permit"}), "scope": {"coding": [{"code": "research"}]}}
        other = doctor.post("/Consent", json=research, headers=FHIR_JSON)
        assert other.status_code == 201, other.text  # other kinds of Consent: as before
        assert doctor.delete(f"/Consent/{other.json()['id']}").status_code in (200, 204)
        assert (
            doctor.post(
                "/Observation",
                json={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "bp"},
                    "subject": {"reference": f"Patient/{ANN}"},
                },
                headers=FHIR_JSON,
            ).status_code
            == 201
        )  # and every other type
        own = ann.post(
            "/Consent",
            json=consent(ANN, {"type": "deny", "code": category("claims")}),
            headers=FHIR_JSON,
        )
        assert own.status_code == 201
        assert doctor.delete(f"/Consent/{own.json()['id']}").status_code == 403
        changed = {**own.json(), "provision": {"type": "permit"}}
        assert (
            doctor.put(f"/Consent/{own.json()['id']}", json=changed, headers=FHIR_JSON).status_code
            == 403
        )
    assert ann.get(f"/Consent/{own.json()['id']}").json()["meta"]["versionId"] == "1"
    assert ann.delete(f"/Consent/{own.json()['id']}").status_code in (200, 204)
