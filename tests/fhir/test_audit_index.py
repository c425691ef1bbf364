"""The audit trail's fast AuditEvent indexer gives exactly the generic indexer's rows.

fhir/search/audit_index.py reads AuditEvent's search index rows straight off the JSON; the
generic, FHIRPath-driven extract() is the reference. Every event builder of privacy/audit.py,
with the variants the node produces, is checked; shapes the fast path does not know must be
left to extract().
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

import pytest

from healthmesh.auth.grant import AccessGrant
from healthmesh.fhir.search.audit_index import audit_event_rows, recurring_key
from healthmesh.fhir.search.extract import IndexRows, extract
from healthmesh.privacy import audit

PATIENT_APP = AccessGrant(
    client_id="portal", scope="patient/*.rs", patient="p1", fhir_user="Patient/p1",
    purpose_of_use="PATRQT",
)  # fmt: skip
B2B = AccessGrant(
    client_id="clinic", scope="system/*.rs", organization="org-7", fhir_user="Practitioner/d1",
    purpose_of_use="TREAT",
)  # fmt: skip
BACKEND = AccessGrant(client_id="backend", scope="system/*.rs")
OBS = audit.Touched("Observation", "o1", "3", "p1")
OTHER = audit.Touched("Observation", "o2", "1", "p2")
SHARED = audit.Touched("Medication", "m1", "1", None)
PATIENT_READ = audit.Touched("Patient", "p1", "2", "p1")


def _events() -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {
        "read by the patient's app": audit.interaction_event(
            PATIENT_APP, "read", [OBS], audit.SUCCESS, address="10.0.0.1"
        ),
        "read of the Patient itself": audit.interaction_event(
            PATIENT_APP, "vread", [PATIENT_READ], audit.SUCCESS, address="10.0.0.1"
        ),
        "b2b search with a query": audit.interaction_event(
            B2B, "search-type", [OBS, SHARED], audit.SUCCESS, query="Observation?patient=p1"
        ),
        "refusal without resources": audit.interaction_event(
            BACKEND, "read", [], audit.MINOR_FAILURE, description="not found"
        ),
        "internal, no grant": audit.interaction_event(None, "create", [SHARED], audit.SUCCESS),
        "token issued": audit.token_event(
            client_id="portal", issued=True, grant_type="authorization_code", grant=PATIENT_APP
        ),
        "token refused": audit.token_event(
            client_id=None, issued=False, grant_type="x", reason="bad", address="10.0.0.2"
        ),
        "login ok": audit.login_event(
            user="Patient/p1", success=True, method="idp:x", address="10.0.0.3", client_id="app"
        ),
        "login refused": audit.login_event(
            user=None, success=False, method="idp:x", address="10.0.0.3", reason="no match"
        ),
        "consent revoked": audit.consent_event(
            PATIENT_APP, consent_id="c1", patient="p1", change="revoke"
        ),
        "match unique": audit.match_event(
            None, rule="R1", fuzzy=False, candidates=["p1"], matched="p1"
        ),
        "match several": audit.match_event(
            None, rule="R2", fuzzy=True, candidates=["p1", "p2"], matched=None
        ),
        "match none": audit.match_event(None, rule=None, fuzzy=False, candidates=[], matched=None),
        "shared link": audit.shared_link_event(
            link_id="l1",
            patient="p1",
            recipient="Dr Who",
            outcome=audit.MINOR_FAILURE,
            step="passcode-refused",
            address="10.0.0.4",
            touched=[OBS],
        ),
        "purge": audit.purge_event(first=1, last=9, removed=9, cutoff="2020", node="n"),
        "alert": audit.alert_event(
            detector="burst", subject="client:x", count=9, detail="d", node="n"
        ),
    }
    for i, e in enumerate(
        audit.interaction_events(
            B2B, "search-system", [OBS, OTHER, SHARED], audit.SUCCESS, query="q"
        )
    ):
        events[f"search over two patients, event {i}"] = e
    return events


def _sorted(rows: IndexRows) -> dict[str, list[str]]:
    return {f.name: sorted(map(repr, getattr(rows, f.name))) for f in fields(IndexRows)}


@pytest.mark.parametrize("name", sorted(_events()))
def test_the_fast_rows_equal_the_generic_rows_for_every_event_the_node_builds(name: str) -> None:
    event = _events()[name]
    stamped = copy.deepcopy(event) | {"meta": {"versionId": "1", "lastUpdated": event["recorded"]}}
    for resource in (event, stamped):
        fast = audit_event_rows(resource)
        assert fast is not None, "the fast path refused an event the node builds"
        assert _sorted(fast) == _sorted(extract(resource))


def test_shapes_the_fast_path_does_not_know_are_left_to_the_generic_indexer() -> None:
    base = audit.interaction_event(PATIENT_APP, "read", [OBS], audit.SUCCESS)
    with_role = copy.deepcopy(base)
    with_role["agent"][0]["role"] = [{"text": "nurse"}]
    labelled = copy.deepcopy(base) | {"meta": {"security": [{"code": "R"}]}}
    absolute = copy.deepcopy(base)
    absolute["entity"][1]["what"]["reference"] = "https://elsewhere.example/fhir/Observation/1"
    not_audit = {"resourceType": "Observation", "id": "o1", "status": "final"}
    for resource in (with_role, labelled, absolute, not_audit):
        assert audit_event_rows(resource) is None


def test_a_patient_named_as_agent_and_entity_is_indexed_once_for_patient_as_generic_does() -> None:
    event = audit.interaction_event(PATIENT_APP, "read", [OBS], audit.SUCCESS)
    fast = audit_event_rows(event)
    assert fast is not None
    assert [r for r in fast.reference if r[0] == "patient"] == [("patient", "Patient", "p1", None)]
    assert _sorted(fast) == _sorted(extract(event))


def test_events_sharing_their_recurring_parts_each_get_their_own_entity_rows() -> None:
    # The rows of an event's recurring parts are made once and shared between events:
    # indexing one event must not change what another is indexed with.
    first = audit.interaction_event(PATIENT_APP, "read", [OBS], audit.SUCCESS, address="10.0.0.1")
    second = audit.interaction_event(
        PATIENT_APP, "read", [PATIENT_READ], audit.SUCCESS, address="10.0.0.1"
    )
    assert recurring_key(first) == recurring_key(second)
    for event in (first, second, first, second):
        fast = audit_event_rows(event)
        assert fast is not None
        assert _sorted(fast) == _sorted(extract(event))
    entity = {r[2] for r in audit_event_rows(second).reference if r[0] == "entity"}  # type: ignore[union-attr]
    assert entity == {"p1"}, "the first event's Observation leaked into the second's rows"


def test_an_unknown_shape_in_the_recurring_parts_is_left_to_the_generic_indexer_every_time() -> (
    None
):
    odd = audit.interaction_event(PATIENT_APP, "read", [OBS], audit.SUCCESS)
    odd["agent"][0]["role"] = [{"text": "nurse"}]
    assert audit_event_rows(odd) is None
    assert audit_event_rows(copy.deepcopy(odd)) is None  # the cached answer, same verdict
