"""Every access through the secured API leaves AuditEvents the patient can read.

Reads are recorded before the answer leaves (and the answer fails if the audit cannot be
written); writes in their own transaction; refusals with outcome 4; AuditEvents cannot be
written through REST; the chain still verifies after it all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from healthmesh.privacy import audit, chain
from healthmesh.store.migrate import migrate
from secured import SecuredNode, secured_node

from conftest import _with_db
from support import FHIR_JSON, privacy_consent, without_id

RUN = uuid.uuid4().hex[:8]


def _id(name: str) -> str:
    return f"{name}-{RUN}"


def _obs(name: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _id(name),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{_id(patient)}"},
    }


@pytest.fixture(scope="module")
def audit_database(admin_url: str) -> Iterator[str]:
    """A database of this module's own: the whole chain must verify, so no other test's
    TRUNCATE (tests/conftest.py empty_store) may remove AuditEvents from under it."""
    name = f"hm_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = _with_db(admin_url, name)
    migrate(url)
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


@pytest.fixture(scope="module")
def node(audit_database: str) -> Iterator[SecuredNode]:
    with secured_node(audit_database) as running:
        records = [
            {"resourceType": "Patient", "id": _id("ada")},
            {"resourceType": "Patient", "id": _id("bob")},
            _obs("ada-w", "ada"),
            _obs("bob-w", "bob"),
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in records
            ],
        }
        with running.client("system/*.cruds", client_id=f"loader-{RUN}") as admin:
            assert admin.post("", json=bundle, headers=FHIR_JSON).status_code == 200
        yield running


def _events_about(node: SecuredNode, patient: str) -> list[dict[str, Any]]:
    with node.client(
        "patient/AuditEvent.rs", client_id=f"portal-{RUN}", patient=_id(patient)
    ) as own:
        response = own.get("/AuditEvent", params={"patient": _id(patient), "_count": "500"})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _entities(event: dict[str, Any]) -> set[str]:
    return {
        e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})
    }


def _by_client(events: list[dict[str, Any]], client_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if any(
            a.get("who", {}).get("identifier", {}).get("value") == client_id
            for a in e.get("agent", [])
        )
    ]


def test_a_patient_sees_who_read_their_record_when_and_why(node: SecuredNode) -> None:
    app = f"reader-{RUN}"
    with node.client(
        "patient/Observation.rs", client_id=app, patient=_id("ada"), purpose_of_use="PATRQT"
    ) as c:
        assert c.get(f"/Observation/{_id('ada-w')}").status_code == 200
    mine = _by_client(_events_about(node, "ada"), app)
    assert len(mine) == 1
    event = mine[0]
    assert event["subtype"][0]["code"] == "read" and event["outcome"] == "0"
    assert any(r.startswith(f"Observation/{_id('ada-w')}") for r in _entities(event))
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "PATRQT"
    assert "recorded" in event


def test_a_search_over_two_patients_tells_each_only_about_their_own(node: SecuredNode) -> None:
    app = f"backend-{RUN}"
    with node.client("system/Observation.rs", client_id=app, purpose_of_use="TREAT") as c:
        found = c.get("/Observation", params={"_id": f"{_id('ada-w')},{_id('bob-w')}"})
        assert len(found.json()["entry"]) == 2
    ada = _by_client(_events_about(node, "ada"), app)
    bob = _by_client(_events_about(node, "bob"), app)
    assert len(ada) == len(bob) == 1
    assert all(_id("bob") not in r for r in _entities(ada[0]))
    assert all(_id("ada") not in r for r in _entities(bob[0]))


def test_writes_and_refusals_are_audited_with_their_outcome(node: SecuredNode) -> None:
    app = f"writer-{RUN}"
    with node.client("patient/Observation.cruds", client_id=app, patient=_id("ada")) as c:
        own = _obs("ada-new", "ada")
        made = c.post("/Observation", json=without_id(own), headers=FHIR_JSON)
        assert made.status_code == 201
        amended = {**made.json(), "status": "amended"}
        assert (
            c.put(f"/Observation/{amended['id']}", json=amended, headers=FHIR_JSON).status_code
            == 200
        )
        foreign = _obs("ada-into-bob", "bob")
        posted = c.post("/Observation", json=without_id(foreign), headers=FHIR_JSON)
        assert posted.status_code == 403
        put = c.put(f"/Observation/{foreign['id']}", json=foreign, headers=FHIR_JSON)
        assert put.status_code == 405  # no ids of its choosing (update-as-create) for it
    events = _by_client(_events_about(node, "ada"), app)
    outcomes = sorted((e["subtype"][0]["code"], e["outcome"]) for e in events)
    assert outcomes == [("create", "0"), ("create", "4"), ("update", "0"), ("update", "4")]


def test_audit_events_cannot_be_written_through_the_api(node: SecuredNode) -> None:
    forged = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "me"}},
    }
    with node.client("system/*.cruds", client_id=f"forger-{RUN}") as c:
        assert c.post("/AuditEvent", json=forged, headers=FHIR_JSON).status_code == 405
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}}],
        }
        assert c.post("", json=bundle, headers=FHIR_JSON).status_code == 405


def test_no_data_leaves_when_its_audit_cannot_be_written(node: SecuredNode) -> None:
    with psycopg.connect(node.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION audit_blocked() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER audit_blocked BEFORE INSERT ON audit_chain"
            " FOR EACH ROW EXECUTE FUNCTION audit_blocked()"
        )
        try:
            with node.client(
                "patient/Observation.rs", client_id=f"blocked-{RUN}", patient=_id("ada")
            ) as c:
                response = c.get(f"/Observation/{_id('ada-w')}")
            assert response.status_code == 503
            assert _id("ada-w") not in response.text
            assert response.json()["resourceType"] == "OperationOutcome"
        finally:
            conn.execute("DROP TRIGGER audit_blocked ON audit_chain")


def test_the_chain_verifies_after_all_this_activity(node: SecuredNode) -> None:
    async def check() -> chain.Report:
        conn = await psycopg.AsyncConnection.connect(node.database_url, autocommit=True)
        try:
            return await chain.verify(conn)
        finally:
            await conn.close()

    report = asyncio.run(check())
    assert report.ok, report.problems[:3]
    assert report.entries >= 4


def _count(node: SecuredNode, marker: str) -> int:
    with psycopg.connect(node.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resource WHERE res_type = 'AuditEvent' AND content LIKE %s",
            (f"%{marker}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_refused_token_request_is_audited_without_its_credentials(node: SecuredNode) -> None:
    before = _count(node, "token-refused")
    bogus = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": bogus,
        "scope": "system/*.rs",
    }
    response = httpx.post(f"{node.base}/auth/token", data=form)
    assert response.status_code in (400, 401)
    assert _count(node, "token-refused") == before + 1
    assert _count(node, bogus) == 0


def test_a_patients_consent_decisions_are_in_their_trail_as_consent_changes(
    node: SecuredNode,
) -> None:
    consent = privacy_consent(f"Patient/{_id('ada')}", {"type": "permit"})
    with node.client(
        "patient/Consent.cru patient/AuditEvent.rs",
        client_id=f"consent-app-{RUN}",
        patient=_id("ada"),
    ) as ada:
        created = ada.post("/Consent", json=consent)
        assert created.status_code == 201, created.text
        consent_id = created.json()["id"]
        withdrawn = ada.put(f"/Consent/{consent_id}", json={**created.json(), "status": "inactive"})
        assert withdrawn.status_code == 200, withdrawn.text

    def changes(change: str) -> list[dict[str, Any]]:
        return [
            e
            for e in _events_about(node, "ada")
            if {"system": audit.HM_EVENT, "code": f"consent-{change}"} in e.get("subtype", [])
        ]

    for change, action in (("create", "C"), ("revoke", "D")):
        (event,) = changes(change)
        assert event["action"] == action
        assert f"Consent/{consent_id}" in _entities(event)
        assert _by_client([event], f"consent-app-{RUN}") == [event]
    assert changes("update") == []  # the withdrawal is a revocation, not a mere update


def test_a_consent_deleted_outright_is_a_revocation_in_the_patients_trail(
    node: SecuredNode,
) -> None:
    consent = privacy_consent(f"Patient/{_id('ada')}", {"type": "deny"})
    client = f"consent-deleter-{RUN}"
    with node.client("patient/Consent.cud", client_id=client, patient=_id("ada")) as ada:
        created = ada.post("/Consent", json=consent)
        assert created.status_code == 201, created.text
        consent_id = created.json()["id"]
        deleted = ada.delete(f"/Consent/{consent_id}")
        assert deleted.status_code in (200, 204), deleted.text
        again = ada.delete(f"/Consent/{consent_id}")  # deleted already: decides nothing new
        assert again.status_code in (200, 204), again.text

    mine = [e for e in _events_about(node, "ada") if f"Consent/{consent_id}" in str(_entities(e))]
    revocations = [
        e for e in mine if {"system": audit.HM_EVENT, "code": "consent-revoke"} in e["subtype"]
    ]
    assert len(revocations) == 1
    assert revocations[0]["action"] == "D"
    assert _by_client(revocations, client) == revocations
    # The REST delete itself is in ada's trail too, naming the tombstone version.
    deletes = [
        e
        for e in mine
        if {"system": audit.INTERACTION, "code": "delete", "display": "delete"} in e["subtype"]
    ]
    assert deletes and any(
        ref.startswith(f"Consent/{consent_id}/_history/2") for e in deletes for ref in _entities(e)
    )
