"""Patients read their own audit trail as FHIR AuditEvents, with their own token: who looked
at my record, when, and why — and nobody else's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from audit_support import run

from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit, chain
from secured import SecuredNode, secured_node

RUN = uuid.uuid4().hex[:8]
ADA, BOB = f"ada-{RUN}", f"bob-{RUN}"
CLINIC = AccessGrant(
    client_id=f"clinic-{RUN}",
    scope="user/Observation.rs",
    fhir_user="Practitioner/dr-lee",
    organization="org-clinic",
    purpose_of_use="TREAT",
)


@pytest.fixture(scope="module")
def recorded(database_url: str) -> dict[str, list[str]]:
    """A clinic searched Ada's and Bob's observations; Ada's app read her record."""
    touched = [
        audit.Touched("Observation", f"a1-{RUN}", "1", ADA),
        audit.Touched("Observation", f"b1-{RUN}", "1", BOB),
    ]
    events = audit.interaction_events(CLINIC, "search-type", touched, "0", query="Observation")
    own = audit.interaction_event(
        AccessGrant(client_id=f"ada-app-{RUN}", scope="patient/*.rs", patient=ADA),
        "read",
        [audit.Touched("Patient", ADA, "1", ADA)],
        "0",
    )
    run(database_url, lambda conn: chain.record(conn, [*events, own]))
    return {ADA: [events[0]["id"], own["id"]], BOB: [events[1]["id"]]}


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        yield running


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_a_patient_reads_who_accessed_their_record_when_and_why(
    node: SecuredNode, recorded: dict[str, list[str]]
) -> None:
    with node.client("patient/AuditEvent.rs", patient=ADA) as ada:
        response = ada.get("AuditEvent", params={"patient": ADA})
        assert response.status_code == 200, response.text
        bundle = response.json()
        # The recorded events, and those the node's own audit added since (reads are audited).
        assert set(recorded[ADA]) <= _ids(bundle)
        [clinic] = [
            e["resource"] for e in bundle["entry"] if e["resource"]["id"] == recorded[ADA][0]
        ]
        who = {
            a["who"].get("reference") or a["who"]["identifier"]["value"] for a in clinic["agent"]
        }
        assert who == {CLINIC.client_id, "org-clinic", "Practitioner/dr-lee"}
        assert clinic["recorded"] and clinic["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
        # Bob's observation, returned by the same search, is not in Ada's event.
        assert f"b1-{RUN}" not in str(clinic)


def test_a_patient_sees_no_other_patients_audit_events(
    node: SecuredNode, recorded: dict[str, list[str]]
) -> None:
    with node.client("patient/AuditEvent.rs", patient=ADA) as ada:
        everything = ada.get("AuditEvent", params={"_count": "1000"}).json()
        assert not _ids(everything) & set(recorded[BOB])
        assert recorded[ADA][0] in _ids(everything)
        bobs = ada.get("AuditEvent", params={"patient": BOB, "_total": "accurate"}).json()
        assert _ids(bobs) == set() and bobs.get("total", 0) == 0
        assert ada.get(f"AuditEvent/{recorded[BOB][0]}").status_code == 404


def test_a_system_auditor_sees_every_patients_events(
    node: SecuredNode, recorded: dict[str, list[str]]
) -> None:
    with node.client("system/AuditEvent.rs", client_id="auditor") as auditor:
        for patient, ids in recorded.items():
            found = auditor.get("AuditEvent", params={"patient": patient}).json()
            # Every recorded event; any others are the node's own audit of these reads.
            assert set(ids) <= _ids(found)
            others = set(recorded) - {patient}
            assert not _ids(found) & {i for o in others for i in recorded[o]}
