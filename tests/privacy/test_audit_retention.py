"""Retention: entries older than the period are purged, the purge is recorded, and verify
still passes because the chain restarts from a signed purge checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from audit_support import fresh_database, patient_grant, run, tamper
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from typer.testing import CliRunner

from healthmesh.cli import app
from healthmesh.privacy import audit, chain, retention

LONG_AGO = datetime.now(UTC) - timedelta(days=8 * 365)


@pytest.fixture
def audit_db(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        yield url


def _event(patient: str, recorded: datetime | None = None) -> dict[str, Any]:
    return audit.interaction_event(
        patient_grant(patient),
        "read",
        [audit.Touched("Observation", f"o-{patient}", "1", patient)],
        audit.SUCCESS,
        recorded=recorded,
    )


def _fill(url: str, old: int, new: int) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> None:
        for n in range(old):
            await chain.record(conn, _event(f"old{n}", LONG_AGO + timedelta(minutes=n)))
        for n in range(new):
            await chain.record(conn, _event(f"new{n}"))

    run(url, body)


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode()).fetchall()


def test_the_default_retention_is_seven_years_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HEALTHMESH_AUDIT_RETENTION_DAYS", raising=False)
    assert retention.retention_from_env() == timedelta(days=2557)
    assert timedelta(days=7 * 365) <= retention.DEFAULT_RETENTION
    monkeypatch.setenv("HEALTHMESH_AUDIT_RETENTION_DAYS", "30")
    assert retention.retention_from_env() == timedelta(days=30)


def test_purge_removes_old_entries_and_their_events_records_itself_and_verify_passes(
    audit_db: str,
) -> None:
    _fill(audit_db, old=5, new=3)
    done = run(audit_db, lambda conn: retention.purge(conn))
    assert (done.removed, done.first, done.last) == (5, 1, 5)
    assert _rows(audit_db, "SELECT min(seq), max(seq) FROM audit_chain") == [(6, 9)]
    # The events are gone as resources and from the search indexes too.
    patients = {r[0] for r in _rows(audit_db, "SELECT patient_id FROM resource")}
    assert patients == {"new0", "new1", "new2", None}
    assert _rows(
        audit_db,
        "SELECT count(*) FROM search_reference WHERE target_id LIKE 'old%'",
    ) == [(0,)]
    # Their packed index rows (migration 0025) go with them; the kept events' stay.
    packed = _rows(audit_db, "SELECT DISTINCT patient_id FROM audit_index ORDER BY 1")
    assert packed == [("new0",), ("new1",), ("new2",), (None,)]
    assert _rows(audit_db, "SELECT seq, kind FROM audit_checkpoint") == [(5, "purge")]
    [(kind, action)] = _rows(audit_db, "SELECT kind, action FROM audit_chain WHERE seq = 9")
    assert (kind, action) == ("purge", "D")
    report = run(audit_db, chain.verify)
    assert report.ok, [str(p) for p in report.problems]
    assert (report.first_seq, report.last_seq) == (6, 9)


def test_after_a_purge_tampering_is_still_found(audit_db: str) -> None:
    _fill(audit_db, old=3, new=4)
    run(audit_db, lambda conn: retention.purge(conn))
    tamper(audit_db, "DELETE FROM audit_chain WHERE seq = 4")  # the first kept entry
    first = run(audit_db, chain.verify).first_bad
    assert first is not None and first.seq == 4 and "no purge checkpoint" in first.what


def test_a_purge_with_nothing_old_changes_nothing(audit_db: str) -> None:
    _fill(audit_db, old=0, new=3)
    done = run(audit_db, lambda conn: retention.purge(conn))
    assert done.removed == 0
    assert _rows(audit_db, "SELECT count(*) FROM audit_chain") == [(3,)]
    assert _rows(audit_db, "SELECT count(*) FROM audit_checkpoint") == [(0,)]


def test_purging_everything_then_appending_and_purging_again_keeps_the_chain_verifiable(
    audit_db: str,
) -> None:
    _fill(audit_db, old=4, new=0)
    first = run(audit_db, lambda conn: retention.purge(conn))
    assert first.removed == 4
    _fill(audit_db, old=0, new=2)
    later = datetime.now(UTC) + timedelta(days=2557 + 1)  # everything so far is now old

    second = run(audit_db, lambda conn: retention.purge(conn, at=later))
    assert (second.first, second.last) == (5, 7)
    assert _rows(audit_db, "SELECT seq FROM audit_chain") == [(8,)]
    report = run(audit_db, chain.verify)
    assert report.ok, [str(p) for p in report.problems]


def test_the_purge_command_takes_a_retention_in_days(audit_db: str) -> None:
    _fill(audit_db, old=2, new=1)
    runner = CliRunner()
    result = runner.invoke(
        app, ["audit", "purge", "--database-url", audit_db, "--retention-days", "3650"]
    )
    assert result.exit_code == 0, result.output
    assert "nothing recorded before" in result.output  # 8 years < 10 years
    result = runner.invoke(
        app, ["audit", "purge", "--database-url", audit_db, "--retention-days", "365"]
    )
    assert result.exit_code == 0, result.output
    assert "removed 2 entries (1–2)" in result.output
    assert runner.invoke(app, ["audit", "verify", "--database-url", audit_db]).exit_code == 0


def test_a_large_purge_goes_in_batches_each_restarting_the_chain_verifiably(audit_db: str) -> None:
    _fill(audit_db, old=5, new=1)
    done = run(audit_db, lambda conn: retention.purge(conn, batch=2))
    assert (done.removed, done.first, done.last) == (5, 1, 5)
    assert _rows(
        audit_db, "SELECT seq FROM audit_checkpoint WHERE kind = 'purge' ORDER BY seq"
    ) == [
        (2,),
        (4,),
        (5,),
    ]
    # Three purge events, appended after the kept entry 6.
    assert _rows(audit_db, "SELECT count(*) FROM audit_chain WHERE kind = 'purge'") == [(3,)]
    report = run(audit_db, chain.verify)
    assert report.ok, [str(p) for p in report.problems]
