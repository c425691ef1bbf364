"""Breach signals over the audit trail (alerts as AuditEvents, PHI-free log lines, a webhook)
and the breach report: which patients' data a client was given, and what kinds."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import psycopg
import pytest
from audit_support import fresh_database, patient_grant, run
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from typer.testing import CliRunner

from healthmesh.auth.grant import AccessGrant
from healthmesh.cli import app
from healthmesh.privacy import audit, breach, chain

NOW = datetime.now(UTC)
SCRAPER = AccessGrant(client_id="scraper", scope="user/*.rs", fhir_user="Practitioner/x")
PAYER = AccessGrant(client_id="payer", scope="system/*.rs", organization="org-payer")


def _reads(grant: AccessGrant, patients: list[str], res_type: str = "Observation") -> list[Any]:
    return [
        audit.interaction_event(grant, "read", [audit.Touched(res_type, f"{p}-1", "1", p)], "0")
        for p in patients
    ]


@pytest.fixture
def audit_db(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        yield url


def _record(url: str, events: list[Any]) -> None:
    run(url, lambda conn: chain.record(conn, events))


def _detect(url: str, **limits: Any) -> set[tuple[str, str, int]]:
    thresholds = breach.Thresholds(**limits)

    async def body(conn: AsyncConnection[TupleRow]) -> list[breach.Alert]:
        return await breach.detect(conn, thresholds=thresholds)

    return {(a.detector, a.subject, a.count) for a in run(url, body)}


def test_a_client_reading_many_patients_without_a_system_scope_is_flagged(audit_db: str) -> None:
    crowd = [f"crowd-{n}" for n in range(60)]
    _record(audit_db, _reads(SCRAPER, crowd) + _reads(PAYER, crowd))
    _record(audit_db, _reads(patient_grant("solo", "solo-app"), ["solo"] * 80))
    found = {a for a in _detect(audit_db) if a[0] == "many-patients"}
    assert found == {("many-patients", "client:scraper", 60)}


def test_a_burst_far_above_the_clients_own_normal_volume_is_flagged(audit_db: str) -> None:
    hours = 10
    steady = patient_grant("s", "steady-app")
    bursty = patient_grant("b", "bursty-app")
    history = []
    for h in range(1, hours + 1):
        at = NOW - timedelta(hours=h, minutes=30)
        history += [
            audit.interaction_event(steady, "read", [], "0", recorded=at) for _ in range(30)
        ]
        if h % 5 == 0:
            history.append(audit.interaction_event(bursty, "read", [], "0", recorded=at))
    current = [audit.interaction_event(steady, "read", [], "0") for _ in range(30)]
    current += [audit.interaction_event(bursty, "read", [], "0") for _ in range(40)]
    _record(audit_db, history + current)
    found = _detect(audit_db, baseline=timedelta(hours=hours), burst_minimum=20, burst_factor=10.0)
    assert {a for a in found if a[0] == "burst"} == {("burst", "client:bursty-app", 40)}


def test_repeated_refusals_by_a_client_or_an_address_are_flagged(audit_db: str) -> None:
    refused = [
        audit.token_event(
            client_id="prober", issued=False, grant_type="client_credentials", reason="bad"
        )
        for _ in range(25)
    ]
    refused += [
        audit.token_event(
            client_id=None,
            issued=False,
            grant_type="client_credentials",
            address="203.0.113.9",
            reason="unknown client",
        )
        for _ in range(21)
    ]
    ok = [
        audit.token_event(client_id="fine", issued=True, grant_type="client_credentials")
        for _ in range(30)
    ]
    few = [audit.token_event(client_id="typo", issued=False, grant_type="x") for _ in range(3)]
    _record(audit_db, refused + ok + few)
    found = {a for a in _detect(audit_db) if a[0] == "refusals"}
    assert found == {("refusals", "client:prober", 25), ("refusals", "address:203.0.113.9", 21)}


def test_passcode_guessing_on_a_shared_link_is_flagged(audit_db: str) -> None:
    def attempt(link: str, outcome: str, address: str) -> dict[str, Any]:
        return audit.shared_link_event(
            link_id=link,
            patient="ada",
            recipient="someone",
            outcome=outcome,
            step="passcode-refused" if outcome != "0" else "manifest",
            address=address,
        )

    events = [attempt("L1", "4", f"198.51.100.{n}") for n in range(6)]  # many addresses
    events += [attempt(f"L{n}", "4", "192.0.2.66") for n in range(10, 16)]  # one address
    events += [attempt("L2", "0", "192.0.2.1") for _ in range(10)]  # fine
    _record(audit_db, events)
    found = {a for a in _detect(audit_db) if a[0] == "passcode-guessing"}
    assert found == {
        ("passcode-guessing", "link:L1", 6),
        ("passcode-guessing", "address:192.0.2.66", 6),
    }


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def test_an_alert_is_an_auditevent_a_phi_free_log_line_and_a_webhook_post_raised_once(
    audit_db: str,
    webhook: tuple[str, list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, received = webhook
    crowd = [f"victim-{n}" for n in range(55)]
    _record(audit_db, _reads(SCRAPER, crowd))

    async def scan(conn: AsyncConnection[TupleRow]) -> list[breach.Alert]:
        return await breach.scan(conn, webhook=url)

    with caplog.at_level(logging.WARNING, logger="healthmesh.privacy.breach"):
        raised = run(audit_db, scan)
        again = run(audit_db, scan)
    assert [(a.detector, a.subject) for a in raised] == [("many-patients", "client:scraper")]
    assert again == []  # not raised twice in the window
    [post] = received
    assert post["detector"] == "many-patients" and post["count"] == 55
    assert post["auditEvent"].startswith("AuditEvent/")
    [line] = [r.getMessage() for r in caplog.records]
    assert "many-patients" in line and "client:scraper" in line
    assert "victim" not in line and "victim" not in json.dumps(post)
    with psycopg.connect(audit_db) as conn:
        [(kind, outcome, patient)] = conn.execute(
            "SELECT kind, outcome, patient_id FROM audit_chain WHERE kind = 'alert'"
        ).fetchall()
    assert (kind, outcome, patient) == ("alert", "8", None)
    assert run(audit_db, chain.verify).ok


def test_a_dead_webhook_does_not_lose_the_alert(audit_db: str) -> None:
    _record(audit_db, _reads(SCRAPER, [f"v-{n}" for n in range(50)]))

    async def scan(conn: AsyncConnection[TupleRow]) -> list[breach.Alert]:
        return await breach.scan(conn, webhook="http://127.0.0.1:9/nobody")

    assert len(run(audit_db, scan)) == 1
    with psycopg.connect(audit_db) as conn:
        assert conn.execute("SELECT count(*) FROM audit_chain WHERE kind = 'alert'").fetchone() == (
            1,
        )


def test_the_breach_report_lists_affected_patients_and_data_categories(audit_db: str) -> None:
    _record(audit_db, _reads(SCRAPER, ["ada", "bob"]) + _reads(SCRAPER, ["ada"], "Condition"))
    _record(audit_db, _reads(PAYER, ["eve"]))  # another client
    old = audit.interaction_event(
        SCRAPER,
        "read",
        [audit.Touched("Claim", "c1", "1", "zed")],
        "0",
        recorded=NOW - timedelta(days=30),
    )
    refused = audit.interaction_event(
        SCRAPER, "read", [audit.Touched("Observation", "o", "1", "max")], "4"
    )
    _record(audit_db, [old, refused])
    since = (NOW - timedelta(days=1)).isoformat()
    runner = CliRunner()
    report = ["audit", "breach-report", "--client", "scraper", "--since", since]
    report += ["--database-url", audit_db]
    result = runner.invoke(app, [*report, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    by_patient = {p["patient"]: p for p in document["patients"]}
    assert set(by_patient) == {"Patient/ada", "Patient/bob"}  # not eve, zed (too old), max
    assert by_patient["Patient/ada"]["resourceTypes"] == ["Condition", "Observation"]
    assert by_patient["Patient/ada"]["events"] == 2
    assert "conditions" in by_patient["Patient/ada"]["dataCategories"]
    assert "labs" in by_patient["Patient/bob"]["dataCategories"]
    table = runner.invoke(app, report, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "2 patients whose data scraper was given" in table.stdout
    assert "Patient/ada" in table.stdout and "Condition, Observation" in table.stdout
