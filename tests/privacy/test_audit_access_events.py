# ruff: noqa: E402 - the auth and share tests' helpers are imported after a sys.path entry
"""Logins, identity-match decisions and shared-link accesses become AuditEvents (issue 5,
item 4), through real HTTP on a secured node; patients read theirs with their own token.

Also: many concurrent audited reads from two server processes' worth of appenders leave a
chain with no gap and no duplicate, every read's event chained exactly once, before its
answer.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

# The helpers of the auth and share tests (their folders are on sys.path only when their own
# tests were collected first).
sys.path[:0] = [str(Path(__file__).parents[1] / d) for d in ("auth", "share")]
from auth_support import AppKey, backend_client, client_credentials_form
from authcode_support import (
    Browser,
    Pkce,
    authorize_params,
    exchange,
    person,
    public_client,
)
from share_support import SHARE_SETTINGS, register_client, summary_bundle

from healthmesh.auth.identity.test_idp import mint_ial2_id_token_sync
from healthmesh.auth.identity.test_idp.app import BUILTIN_CLIENT
from healthmesh.config import Settings
from healthmesh.privacy import chain
from healthmesh.share.shl import decode
from healthmesh.store.migrate import migrate
from secured import SecuredNode

from conftest import ServerThread, _with_db
from support import FHIR_JSON

RUN = uuid.uuid4().hex[:8]
HM_EVENT = "https://healthmesh.dev/fhir/CodeSystem/audit-event"


@pytest.fixture(scope="module")
def audit_database(admin_url: str) -> Iterator[str]:
    """This module's own database: the whole chain must verify at the end."""
    name = f"hm_audit_access_{uuid.uuid4().hex[:10]}"
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


def _server(url: str) -> ServerThread:
    settings = Settings(
        database_url=url, open=False, test_identity_provider=True, share=SHARE_SETTINGS
    )
    return ServerThread(settings)


@pytest.fixture(scope="module")
def node(audit_database: str) -> Iterator[SecuredNode]:
    with _server(audit_database) as server:
        register_client(audit_database)
        yield SecuredNode(server, audit_database)


def _own_events(node: SecuredNode, patient: str, **params: str) -> list[dict[str, Any]]:
    with node.client("patient/AuditEvent.rs", client_id=f"portal-{RUN}", patient=patient) as own:
        response = own.get("/AuditEvent", params={"patient": patient, "_count": "500", **params})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _all_events(node: SecuredNode, **params: str) -> list[dict[str, Any]]:
    with node.client("system/AuditEvent.rs", client_id=f"auditor-{RUN}") as auditor:
        response = auditor.get("/AuditEvent", params={"_count": "1000", **params})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _subtypes(event: dict[str, Any]) -> set[str]:
    return {c["code"] for c in event.get("subtype", [])}


def _details(event: dict[str, Any]) -> dict[str, str]:
    return {
        d["type"]: d["valueString"] for e in event.get("entity", []) for d in e.get("detail", [])
    }


# --- shared links ---------------------------------------------------------------------------


def _link(node: SecuredNode, patient: str, **body: Any) -> str:
    with node.client("patient/*.rs launch/patient", client_id="share-tests", patient=patient) as c:
        c.base_url = httpx.URL(node.base.removesuffix("/fhir"))
        response = c.post("/share/links", json={"bundle": summary_bundle(), **body})
    assert response.status_code == 201, response.text
    return decode(response.json()["shlink"]).url


def test_each_shared_link_access_is_an_auditevent_of_the_links_patient(
    node: SecuredNode,
) -> None:
    patient = f"shl-{RUN}"
    url = _link(node, patient, flag="P", passcode="4711")
    refused = httpx.post(url, json={"recipient": "Clinic A", "passcode": "0000"}, timeout=30)
    assert refused.status_code == 401
    answered = httpx.post(url, json={"recipient": "Clinic B", "passcode": "4711"}, timeout=30)
    assert answered.status_code == 200, answered.text
    location = answered.json()["files"][0]["location"]
    assert httpx.get(location, timeout=30).status_code == 200

    steps = {"shl-manifest", "shl-passcode-refused", "shl-file"}
    events = [e for e in _own_events(node, patient) if _subtypes(e) & steps]
    seen = sorted(
        (next(iter(_subtypes(e))), e["outcome"], e["agent"][0]["who"]["display"]) for e in events
    )
    assert seen == [
        ("shl-file", "0", "Clinic B"),
        ("shl-manifest", "0", "Clinic B"),
        ("shl-passcode-refused", "4", "Clinic A"),
    ]
    text = str(events)
    assert "4711" not in text and url.rsplit("/", 1)[-1] not in text  # no passcode, no URL
    assert location.rsplit("/", 1)[-1] not in text  # nor the file's capability URL


def test_a_shared_link_access_is_not_served_when_its_audit_cannot_be_written(
    node: SecuredNode,
) -> None:
    patient = f"shl-blocked-{RUN}"
    url = _link(node, patient)
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
            response = httpx.post(url, json={"recipient": "Clinic C"}, timeout=30)
            assert response.status_code == 503
            assert response.json()["error"] == "temporarily_unavailable"
            assert "files" not in response.text
            # Same transaction: the access record rolled back with its missing AuditEvent.
            row = conn.execute(
                "SELECT count(*) FROM shl_access a JOIN shl_link l ON l.id = a.link_id"
                " WHERE l.patient_id = %s",
                (patient,),
            ).fetchone()
            assert row == (0,)
        finally:
            conn.execute("DROP TRIGGER audit_blocked ON audit_chain")


# --- identity matching (cms_smart) ------------------------------------------------------------


def _patient(given: str, family: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"{given.lower()}-{RUN}",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1961-04-09",
        "address": [
            {"line": ["12 Elm Street"], "city": "Boston", "state": "MA", "postalCode": "02115"}
        ],
    }


def _cms_token(node: SecuredNode, patient: dict[str, Any]) -> httpx.Response:
    host = node.base.removesuffix("/fhir")
    id_token = mint_ial2_id_token_sync(
        node.database_url, issuer=f"{host}/idp", audience=BUILTIN_CLIENT, patient=patient
    )
    key = AppKey("ES384")
    app = backend_client(
        node.database_url, key, scope="patient/*.rs", grant_types=("client_credentials",)
    )
    extensions = {"cms_smart": {"version": "1", "purpose_of_use": "PATRQT", "id_token": id_token}}
    form = client_credentials_form(app, key, node.base, scope="patient/*.rs", extensions=extensions)
    return httpx.post(f"{node.base}/auth/token", data=form, timeout=30)


def test_identity_match_decisions_are_audited_found_none_and_several(node: SecuredNode) -> None:
    ada = _patient("Adelind", f"Quillfeather{RUN}")
    twins = [_patient("Zora", f"Twinning{RUN}"), _patient("Zora", f"Twinning{RUN}")]
    twins[1]["id"] = f"zora2-{RUN}"
    with node.client("system/*.cruds", client_id=f"loader-{RUN}") as admin:
        for record in (ada, *twins):
            stored = admin.put(f"/Patient/{record['id']}", json=record, headers=FHIR_JSON)
            assert stored.status_code in (200, 201), stored.text
    assert _cms_token(node, ada).status_code == 200
    stranger = {**ada, "id": f"nobody-{RUN}", "name": [{"family": "Nobody", "given": ["Zed"]}]}
    assert _cms_token(node, stranger).status_code != 200
    assert _cms_token(node, twins[0]).status_code != 200

    mine = [e for e in _own_events(node, ada["id"]) if "match-unique" in _subtypes(e)]
    assert len(mine) == 1 and _details(mine[0])["unique"] == "true"
    unowned = _all_events(node, subtype="match-none")  # none or several: no patient owns it
    candidates = sorted(_details(e)["candidates"] for e in unowned)
    several = [e for e in unowned if _details(e)["candidates"] == "2"]
    assert "0" in candidates and len(several) == 1
    named = {x["what"]["reference"] for x in several[0]["entity"] if "what" in x}
    assert named == {f"Patient/{t['id']}" for t in twins}
    for twin in twins:  # neither twin learns that a stranger's match considered them
        assert not [e for e in _own_events(node, twin["id"]) if _subtypes(e) & {"match-none"}]


# --- logins at the authorization endpoint ---------------------------------------------------


def test_logins_are_audited_success_for_the_patient_and_failure_without_one(
    node: SecuredNode,
) -> None:
    with node.client("system/*.cruds", client_id=f"registrar-{RUN}") as admin:
        someone = person(node.database_url, admin)
    app = public_client(node.database_url)
    with Browser(node.base) as browser:
        pkce = Pkce()
        code = browser.code_for(authorize_params(app, node.base, pkce), someone)
    with httpx.Client(timeout=30) as http:
        assert exchange(http, node.base, app, code, pkce).status_code == 200
        bogus = http.get(f"{node.base}/auth/callback", params={"state": "forged", "code": "x"})
    assert bogus.status_code == 400

    logins = [e for e in _own_events(node, someone.patient_id) if "110122" in _subtypes(e)]
    assert [e["outcome"] for e in logins] == ["0"]
    app_agents = [a for a in logins[0]["agent"] if "identifier" in a.get("who", {})]
    assert app_agents[0]["who"]["identifier"]["value"] == app.client_id
    matched = [e for e in _own_events(node, someone.patient_id) if "match-unique" in _subtypes(e)]
    assert len(matched) == 1  # the login's identity match, too
    failed = [e for e in _all_events(node, subtype="110122") if e["outcome"] == "4"]
    assert any("expired" in e.get("outcomeDesc", "") for e in failed)
    assert all("forged" not in str(e) for e in failed)  # the state value is not recorded


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_audited_reads_on_two_processes_leave_no_gap_and_no_duplicate(
    node: SecuredNode, audit_database: str
) -> None:
    patient = f"busy-{RUN}"
    with node.client("system/*.cruds", client_id=f"loader-{RUN}") as admin:
        assert admin.put(
            f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient},
            headers=FHIR_JSON,
        ).status_code == 201  # fmt: skip
    client_id = f"reader-{RUN}"
    with _server(audit_database) as second:
        other = SecuredNode(second, audit_database)
        servers = [node, other]
        tokens = [s.token("patient/*.rs", client_id=client_id, patient=patient) for s in servers]

        def reads(i: int) -> list[int]:
            server, token = servers[i % 2], tokens[i % 2]
            with httpx.Client(base_url=server.base, timeout=60) as http:
                return [
                    http.get(
                        f"/Patient/{patient}", headers={"Authorization": f"Bearer {token}"}
                    ).status_code
                    for _ in range(25)
                ]

        with ThreadPoolExecutor(16) as pool:
            statuses = [s for batch in pool.map(reads, range(16)) for s in batch]
        assert statuses == [200] * 400

    async def check() -> tuple[chain.Report, list[tuple[Any, ...]]]:
        conn = await psycopg.AsyncConnection.connect(audit_database, autocommit=True)
        try:
            report = await chain.verify(conn)
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq),"
                " count(DISTINCT event_id) FROM audit_chain"
            )
            totals = await cur.fetchall()
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT c.event_id) FROM audit_chain c"
                " WHERE c.client_id = %s",
                (client_id,),
            )
            return report, [*totals, *(await cur.fetchall())]
        finally:
            await conn.close()

    # An answered read is chained already: no waiting for anything to catch up.
    report, rows = asyncio.run(check())
    assert report.ok, report.problems[:3]
    count, distinct, first, last, events = rows[0]
    assert count == distinct == events == last - first + 1  # no gap, no duplicate
    assert rows[1] == (400, 400)  # every read chained exactly once


def test_the_chain_verifies_after_all_this_activity(node: SecuredNode) -> None:
    async def check() -> chain.Report:
        conn = await psycopg.AsyncConnection.connect(node.database_url, autocommit=True)
        try:
            return await chain.verify(conn)
        finally:
            await conn.close()

    report = asyncio.run(check())
    assert report.ok, report.problems[:3]
