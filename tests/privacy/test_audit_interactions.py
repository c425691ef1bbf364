"""The recording API against real interaction results: what the integrator will wire.

A search with ``_include`` and an update run through ``dispatch`` on a real store; their
results become events (``touched_in``, ``interaction_events``) recorded on the same session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from audit_support import fresh_database, run
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from healthmesh.auth.grant import AccessGrant
from healthmesh.interactions.context import FhirRequest
from healthmesh.interactions.dispatch import dispatch
from healthmesh.privacy import audit, chain
from healthmesh.store.repository import Repository

BACKEND = AccessGrant(client_id="backend", scope="system/*.cruds", purpose_of_use="TREAT")


@pytest.fixture
def audit_db(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        yield url


def _put(res_type: str, id: str, **body: Any) -> FhirRequest:
    return FhirRequest(
        method="PUT",
        path=(res_type, id),
        body={"resourceType": res_type, "id": id, **body},
        base="http://node/fhir",
    )


def _obs(id: str, patient: str) -> FhirRequest:
    return _put(
        "Observation",
        id,
        status="final",
        code={"text": "glucose"},
        subject={"reference": f"Patient/{patient}"},
    )


def test_a_searchs_bundle_becomes_one_event_per_patient_recorded_before_the_answer(
    audit_db: str,
) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> list[dict[str, Any]]:
        repository = Repository(audit_db, min_size=1, max_size=2)
        await repository.open()
        try:
            async with repository.session() as session:
                for request in (
                    _put("Patient", "ada", gender="female"),
                    _put("Patient", "bob", gender="male"),
                    _obs("a1", "ada"),
                    _obs("a2", "ada"),
                    _obs("b1", "bob"),
                ):
                    await dispatch(session, request)
            search = FhirRequest(
                method="GET",
                path=("Observation",),
                params=[("_include", "Observation:subject")],
                base="http://node/fhir",
            )
            async with repository.session(write=False) as session:
                result = await dispatch(session, search)
                assert result.body is not None
                events = audit.interaction_events(
                    BACKEND,
                    "search-type",
                    audit.touched_in(result.body),
                    audit.outcome_of_status(result.status),
                    query=f"Observation?{search.query_string}",
                )
                await chain.record(session, events)
            return events
        finally:
            await repository.close()

    events = run(audit_db, body)
    facts = [chain.facts_of(e) for e in events]
    assert [f.patient_id for f in facts] == ["ada", "bob", None]
    refs = [
        sorted(x["what"]["reference"] for x in e["entity"] if x["role"]["code"] == "4")
        for e in events
    ]
    assert refs[0] == [
        "Observation/a1/_history/1",
        "Observation/a2/_history/1",
        "Patient/ada/_history/1",
    ]
    assert refs[1] == ["Observation/b1/_history/1", "Patient/bob/_history/1"]
    assert facts[0].types == ("Observation", "Patient")
    with psycopg.connect(audit_db) as conn:
        stored = conn.execute(
            "SELECT patient_id FROM resource WHERE res_type = 'AuditEvent' ORDER BY patient_id"
        ).fetchall()
    assert stored == [("ada",), ("bob",), (None,)]
    assert run(audit_db, chain.verify).ok


def test_an_update_and_its_event_commit_in_one_transaction(audit_db: str) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> None:
        repository = Repository(audit_db, min_size=1, max_size=2)
        await repository.open()
        try:
            async with repository.session() as session:
                result = await dispatch(session, _put("Patient", "eve", gender="female"))
                assert result.version is not None
                touched = audit.Touched(
                    "Patient", result.version.id, str(result.version.version_id), "eve"
                )
                await chain.record(
                    session,
                    audit.interaction_event(
                        BACKEND, "update", [touched], audit.outcome_of_status(result.status)
                    ),
                )
        finally:
            await repository.close()

    run(audit_db, body)
    with psycopg.connect(audit_db) as conn:
        [(action, patient, types)] = conn.execute(
            "SELECT action, patient_id, types FROM audit_chain"
        ).fetchall()
    assert (action, patient, types) == ("U", "eve", ["Patient"])
