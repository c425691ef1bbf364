"""AuditEvents' packed search index (migration 0025): the same rows, the same answers.

The audit trail stores an event's index rows as one ``audit_index`` row, but for the
selective parameters (store/search/tables.py AUDIT_REAL_PARAMS), and search reads them back
through the ``audit_search_<kind>`` views. These tests hold the packing to the generic
indexer — every builder's events read back with exactly extract()'s rows — and search the
trail over HTTP by parameters that live only in the packed rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from audit_support import fresh_database, run
from psycopg import sql

from healthmesh.auth.grant import AccessGrant
from healthmesh.fhir.search.extract import IndexRows, extract
from healthmesh.privacy import audit, chain
from healthmesh.store.copy_rows import INDEX_COLUMNS
from healthmesh.store.search.tables import AUDIT_REAL_PARAMS
from secured import SecuredNode, secured_node

RUN = uuid.uuid4().hex[:8]
APP = AccessGrant(
    client_id=f"app-{RUN}", scope="patient/*.rs", patient="p1", fhir_user="Patient/p1",
    purpose_of_use="PATRQT",
)  # fmt: skip
CLINIC = AccessGrant(
    client_id=f"clinic-{RUN}", scope="system/*.rs", organization="org-7",
    fhir_user="Practitioner/d1", purpose_of_use="TREAT",
)  # fmt: skip


def _events() -> list[dict[str, Any]]:
    obs = audit.Touched("Observation", "o1", "3", "p1")
    other = audit.Touched("Observation", "o2", "1", "p2")
    return [
        audit.interaction_event(APP, "read", [obs], audit.SUCCESS, address="10.0.0.1"),
        *audit.interaction_events(CLINIC, "search-type", [obs, other], audit.SUCCESS, query="q"),
        audit.interaction_event(CLINIC, "read", [], audit.MINOR_FAILURE, description="gone"),
        audit.token_event(client_id="c", issued=False, grant_type="x", reason="bad"),
        audit.login_event(user="Patient/p1", success=True, method="idp:x", address="10.0.0.3"),
        audit.consent_event(APP, consent_id="c1", patient="p1", change="revoke"),
        audit.match_event(None, rule="R2", fuzzy=True, candidates=["p1", "p2"], matched=None),
        audit.shared_link_event(
            link_id="l1",
            patient="p1",
            recipient="Dr Who",
            outcome=audit.MINOR_FAILURE,
            step="passcode-refused",
            address="10.0.0.4",
            touched=[obs],
        ),
    ]


def _as_rows(index: IndexRows) -> dict[str, list[tuple[Any, ...]]]:
    """kind -> sorted (param, values…, elem) rows, as the search tables hold them."""
    rows: dict[str, list[tuple[Any, ...]]] = {
        kind: sorted(((*r, None) for r in getattr(index, kind)), key=repr) for kind in INDEX_COLUMNS
    }
    for kind, row, elem in index.composite:
        rows[kind] = sorted([*rows[kind], (*row, elem)], key=repr)
    return {kind: r for kind, r in rows.items() if r}


def _stored_rows(conn: psycopg.Connection[Any], event_id: str, prefix: str) -> dict[str, Any]:
    found: dict[str, list[tuple[Any, ...]]] = {}
    for kind, columns in INDEX_COLUMNS.items():
        query = sql.SQL("SELECT {} FROM {} WHERE res_type = 'AuditEvent' AND res_id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, ("param", *columns, "elem"))),
            sql.Identifier(f"{prefix}search_{kind}"),
        )
        rows = conn.execute(query, (event_id,)).fetchall()
        if rows:
            found[kind] = sorted((tuple(r) for r in rows), key=repr)
    return found


def test_every_events_rows_read_back_through_the_views_as_the_indexer_gave_them(
    admin_url: str,
) -> None:
    with fresh_database(admin_url) as url:
        events = _events()
        run(url, lambda conn: chain.record(conn, events))
        with psycopg.connect(url) as conn:
            for event in events:
                (content,) = conn.execute(
                    "SELECT content FROM resource WHERE res_type = 'AuditEvent' AND id = %s",
                    (event["id"],),
                ).fetchone() or (None,)
                expected = _as_rows(extract(orjson.loads(content)))
                assert _stored_rows(conn, event["id"], "audit_") == expected, event["id"]
                # The split: only the selective parameters are rows of the search tables,
                # and the packed rows hold none of them (each row is in one place only).
                real = _stored_rows(conn, event["id"], "")
                assert {r[0] for rows in real.values() for r in rows} <= AUDIT_REAL_PARAMS
                (packed,) = conn.execute(
                    "SELECT rows FROM audit_index WHERE res_id = %s", (event["id"],)
                ).fetchone() or (None,)
                assert packed is not None
                assert not {r[0] for rows in packed.values() for r in rows} & AUDIT_REAL_PARAMS
                # Purged later with the event: the packed row names its compartment's patient.
                assert (
                    conn.execute(
                        "SELECT patient_id FROM audit_index WHERE res_id = %s", (event["id"],)
                    ).fetchone()
                    == conn.execute(
                        "SELECT patient_id FROM resource WHERE res_type = 'AuditEvent' AND id = %s",
                        (event["id"],),
                    ).fetchone()
                )


# --- searching the trail by packed parameters, over HTTP ------------------------------------
@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        yield running


@pytest.fixture(scope="module")
def trail(node: SecuredNode, database_url: str) -> dict[str, Any]:
    """A Patient and an Observation of theirs, read by an app (one event) and searched by a
    clinic from another address (another); the ids of both events and resources."""
    with node.client("system/*.cruds", client_id=f"writer-{RUN}") as writer:
        patient = writer.post("Patient", json={"resourceType": "Patient"}).json()["id"]
        observation = writer.post(
            "Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": f"Patient/{patient}"},
            },
        ).json()["id"]
    touched = [audit.Touched("Observation", observation, "1", patient)]
    app = AccessGrant(client_id=f"app-{RUN}", scope="patient/*.rs", patient=patient)
    read = audit.interaction_event(app, "read", touched, audit.SUCCESS, address=f"10.9.{RUN}")
    search = audit.interaction_event(
        CLINIC, "search-type", touched, audit.SUCCESS, query="Observation?code=weight"
    )
    run(database_url, lambda conn: chain.record(conn, [read, search]))
    return {
        "patient": patient,
        "observation": observation,
        "read": read["id"],
        "search": search["id"],
    }


def _ids(bundle: dict[str, Any], kind: str = "AuditEvent") -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == kind
    }


def _search(node: SecuredNode, path: str, **params: str) -> dict[str, Any]:
    scope = "system/AuditEvent.rs system/Observation.rs system/Patient.rs"
    with node.client(scope, client_id=f"auditor-{RUN}") as auditor:
        response = auditor.get(path, params={"_count": "500", **params})
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"subtype": "read"}, {"read"}),
        ({"subtype": "http://hl7.org/fhir/restful-interaction|search-type"}, {"search"}),
        ({"action": "R"}, {"read"}),
        ({"action": "E"}, {"search"}),
        ({"outcome": "0", "subtype": "read,search-type"}, {"read", "search"}),
        ({"agent:identifier": f"urn:healthmesh:client-id|app-{RUN}"}, {"read"}),
        ({"address": f"10.9.{RUN}"}, {"read"}),
        ({"entity-role": "24"}, {"search"}),  # the query entity (object-role 24)
        ({"entity-role:not": "24", "subtype": "read,search-type"}, {"read"}),
        ({"agent": "Practitioner/d1", "subtype": "search-type"}, {"search"}),
    ],
)
def test_the_trail_is_searched_by_parameters_kept_in_the_packed_rows(
    node: SecuredNode, trail: dict[str, Any], params: dict[str, str], expected: set[str]
) -> None:
    bundle = _search(node, "AuditEvent", entity=f"Observation/{trail['observation']}", **params)
    assert _ids(bundle) == {trail[name] for name in expected}


def test_a_count_over_packed_parameters_counts_what_the_search_lists(
    node: SecuredNode, trail: dict[str, Any]
) -> None:
    for params in (
        {"entity": f"Observation/{trail['observation']}", "subtype": "read,search-type"},
        {"address": f"10.9.{RUN}"},
        {"agent:identifier": f"urn:healthmesh:client-id|app-{RUN}", "action": "R"},
    ):
        listed = _ids(_search(node, "AuditEvent", **params))
        assert trail["read"] in listed
        counted = _search(node, "AuditEvent", _summary="count", **params)
        assert counted["total"] == len(listed), params


def test_includes_and_reverse_chains_reach_through_the_packed_references(
    node: SecuredNode, trail: dict[str, Any]
) -> None:
    included = _search(
        node, "AuditEvent", _id=trail["read"], _include="AuditEvent:entity:Observation"
    )
    assert _ids(included, "Observation") == {trail["observation"]}
    reverse = _search(
        node, "Observation", _id=trail["observation"], _revinclude="AuditEvent:entity"
    )
    assert {trail["read"], trail["search"]} <= _ids(reverse)
    has = _search(node, "Observation", **{"_has:AuditEvent:entity:subtype": "search-type"})
    assert trail["observation"] in _ids(has, "Observation")
    chained = _search(
        node,
        "AuditEvent",
        **{"entity:Observation.code:text": "weight", "subtype": "read"},
    )
    assert trail["read"] in _ids(chained)


def test_sorting_the_trail_by_a_packed_parameter_orders_every_page(
    node: SecuredNode, trail: dict[str, Any]
) -> None:
    ordered = _search(
        node, "AuditEvent", entity=f"Observation/{trail['observation']}", _sort="-action"
    )
    actions = [e["resource"]["action"] for e in ordered["entry"]]
    assert actions == sorted(actions, reverse=True) and {"R", "E"} <= set(actions)
