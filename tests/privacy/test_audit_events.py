"""AuditEvent construction: valid R4, the DICOM/HL7 codes, agents, entities, one patient each."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from healthmesh.auth.grant import AccessGrant
from healthmesh.fhir.search.audit_index import recurring_key
from healthmesh.fhir.validation import check_resource
from healthmesh.privacy import audit
from healthmesh.privacy.chain import facts_of

CLINIC = AccessGrant(
    client_id="clinic-ehr",
    scope="user/Observation.rs user/Patient.rs",
    fhir_user="Practitioner/dr-who",
    organization="org-clinic",
    purpose_of_use="TREAT",
    grant_id="grant-9",
)


def _codes(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in items]


def _entity_roles(event: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["role"]["code"], (e.get("what") or {}).get("reference")) for e in event["entity"]]


def test_a_search_event_names_the_interaction_every_resource_returned_the_patient_and_the_query() -> (
    None
):
    touched = [audit.Touched("Observation", f"o{i}", "2", "ada") for i in range(3)]
    event = audit.interaction_event(
        CLINIC, "search-type", touched, audit.SUCCESS, query="Observation?code=8867-4"
    )
    check_resource(event, expected_type="AuditEvent")
    assert (event["type"]["system"], event["type"]["code"]) == (audit.EVENT_TYPE, "rest")
    assert _codes(event["subtype"]) == [(audit.INTERACTION, "search-type")]
    assert event["action"] == "E" and event["outcome"] == "0"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    roles = _entity_roles(event)
    assert roles[0] == ("1", "Patient/ada")
    assert roles[1:4] == [("4", f"Observation/o{i}/_history/2") for i in range(3)]
    query = event["entity"][4]
    assert query["role"]["code"] == "24"
    assert base64.b64decode(query["query"]).decode() == "Observation?code=8867-4"


def test_agents_are_the_app_the_organization_and_the_user_who_is_the_requestor() -> None:
    event = audit.interaction_event(
        CLINIC, "read", [audit.Touched("Patient", "ada", "1", "ada")], "0", address="10.0.0.7"
    )
    app, org, user = event["agent"]
    assert app["who"]["identifier"] == {"system": audit.CLIENT_ID, "value": "clinic-ehr"}
    assert app["network"] == {"address": "10.0.0.7", "type": "2"}
    assert app["extension"][0]["valueString"] == CLINIC.scope
    assert org["who"]["identifier"]["value"] == "org-clinic"
    assert user["who"]["reference"] == "Practitioner/dr-who"
    assert [a["requestor"] for a in (app, org, user)] == [False, False, True]
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert event["source"]["observer"]["identifier"]["value"] == "healthmesh"


@pytest.mark.parametrize(
    ("interaction", "action"),
    [
        ("read", "R"),
        ("vread", "R"),
        ("create", "C"),
        ("update", "U"),
        ("patch", "U"),
        ("delete", "D"),
        ("history-instance", "R"),
        ("operation", "E"),
        ("transaction", "E"),
    ],
)
def test_each_interaction_maps_to_its_action(interaction: str, action: str) -> None:
    event = audit.interaction_event(None, interaction, [], audit.outcome_of_status(201))
    check_resource(event, expected_type="AuditEvent")
    assert event["action"] == action
    assert event["subtype"][0]["code"] == interaction


def test_outcomes_follow_the_http_status() -> None:
    assert [audit.outcome_of_status(s) for s in (200, 304, 403, 404, 500)] == [
        "0",
        "0",
        "4",
        "4",
        "8",
    ]


def test_a_search_over_several_patients_is_one_event_per_patient_none_naming_another() -> None:
    touched = [
        audit.Touched("Observation", "a1", "1", "ada"),
        audit.Touched("Observation", "b1", "1", "bob"),
        audit.Touched("Observation", "a2", "1", "ada"),
        audit.Touched("Organization", "org", "1", None),
    ]
    query = "Observation?patient=ada,bob"
    events = audit.interaction_events(CLINIC, "search-type", touched, "0", query=query)
    facts = [facts_of(e) for e in events]
    assert [f.patient_id for f in facts] == ["ada", "bob", None]
    refs = [{e.get("what", {}).get("reference") for e in ev["entity"]} for ev in events]
    assert refs[0] == {"Patient/ada", "Observation/a1/_history/1", "Observation/a2/_history/1"}
    assert refs[1] == {"Patient/bob", "Observation/b1/_history/1"}
    # The query names both patients: only the event no patient owns carries it.
    assert [any("query" in e for e in ev["entity"]) for ev in events] == [False, False, True]
    assert "Organization/org/_history/1" in refs[2]
    for ev in events:
        check_resource(ev, expected_type="AuditEvent")
    with pytest.raises(ValueError, match="several patients"):
        audit.interaction_event(CLINIC, "search-type", touched, "0")


def test_a_search_within_one_patients_record_is_one_event_with_its_query() -> None:
    touched = [
        audit.Touched("Observation", "a1", "1", "ada"),
        audit.Touched("Medication", "m1", "1", None),
    ]
    [event] = audit.interaction_events(CLINIC, "search-type", touched, "0", query="q=1")
    assert facts_of(event).patient_id == "ada"
    assert base64.b64decode(event["entity"][-1]["query"]) == b"q=1"


def test_touched_finds_the_owner_of_a_served_resource() -> None:
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "3"},
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/ada"},
    }
    assert audit.Touched.of(obs) == audit.Touched("Observation", "o1", "3", "ada")
    assert audit.Touched.of({"resourceType": "Patient", "id": "bob"}).patient == "bob"
    assert audit.Touched.of({"resourceType": "Organization", "id": "x"}).patient is None


def test_other_events_are_valid_and_carry_their_facts_without_secrets() -> None:
    patient = AccessGrant(
        client_id="diabetes-app",
        scope="patient/*.rs",
        patient="ada",
        purpose_of_use="PATRQT",
        grant_id="grant-1",
        token_id="jti-secret-ish",
    )
    events = {
        "token": audit.token_event(
            client_id="diabetes-app", issued=True, grant_type="client_credentials", grant=patient
        ),
        "refused": audit.token_event(
            client_id="diabetes-app",
            issued=False,
            grant_type="client_credentials",
            reason="the id_token is expired",
            address="192.0.2.1",
        ),
        "login": audit.login_event(user="Patient/ada", success=True, method="passkey"),
        "consent": audit.consent_event(patient, consent_id="c1", patient="ada", change="revoke"),
        "match": audit.match_event(
            patient, rule="first+last+dob+street", fuzzy=True, candidates=["ada"], matched="ada"
        ),
        "no-match": audit.match_event(
            None, rule=None, fuzzy=False, candidates=["ada", "eve"], matched=None
        ),
        "link": audit.shared_link_event(
            link_id="L1",
            patient="ada",
            recipient="Dr Lee",
            outcome=audit.MINOR_FAILURE,
            step="passcode-refused",
        ),
        "purge": audit.purge_event(first=1, last=9, removed=9, cutoff="2019-01-01", node="n"),
        "alert": audit.alert_event(
            detector="burst", subject="client:x", count=9, detail="d", node="n"
        ),
    }
    for name, event in events.items():
        check_resource(event, expected_type="AuditEvent")
        assert "jti-secret-ish" not in str(event), name
    facts = {name: facts_of(e) for name, e in events.items()}
    assert facts["token"].kind == "token" and facts["token"].patient_id == "ada"
    assert facts["refused"].outcome == "4" and facts["refused"].address == "192.0.2.1"
    assert facts["consent"].action == "D" and facts["consent"].types == ("Consent",)
    assert facts["match"].patient_id == "ada"
    # Several candidates: the event belongs to no patient, so none of them can read it.
    assert facts["no-match"].patient_id is None
    assert facts["link"].object == "L1" and facts["link"].kind == "shared-link"
    assert facts["alert"].object == "burst:client:x" and facts["alert"].patient_id is None
    # The appender reads the recurring parts' facts from a cache keyed by those parts;
    # verify reads them off the stored event: both must say the same of every kind.
    for name, event in events.items():
        assert facts_of(event, recurring_key(event)) == facts[name], name


def test_facts_flag_system_scopes_and_list_resource_types() -> None:
    backend = AccessGrant(client_id="payer", scope="system/ExplanationOfBenefit.rs")
    event = audit.interaction_event(
        backend,
        "search-type",
        [audit.Touched("ExplanationOfBenefit", "e1", None, "ada")],
        "0",
    )
    fact = facts_of(event)
    assert fact.system_access and fact.client_id == "payer"
    assert fact.types == ("ExplanationOfBenefit",) and fact.patient_id == "ada"
    assert not facts_of(audit.interaction_event(CLINIC, "read", [], "0")).system_access


def test_touched_in_a_bundle_lists_every_served_resource_but_outcomes() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "ada", "meta": {"versionId": "2"}}},
            {
                "resource": {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/ada"},
                },
                "search": {"mode": "include"},
            },
            {"resource": {"resourceType": "OperationOutcome", "issue": []}},
        ],
    }
    assert audit.touched_in(bundle) == [
        audit.Touched("Patient", "ada", "2", "ada"),
        audit.Touched("Condition", "c1", None, "ada"),
    ]
