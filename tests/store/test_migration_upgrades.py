"""Upgrading a database an older node wrote: what the migrations carry over.

Migration 0023 dropped the queue of unchained read events (0017's ``audit_pending``): a node
upgraded while events still waited there must chain them, in arrival order, before the queue
goes, so the trail stays complete and verifies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit, chain
from healthmesh.store.migrate import migrate, migrations

from conftest import scratch_database

BEFORE_0023 = 22


@pytest.fixture
def database(admin_url: str) -> Iterator[str]:
    with scratch_database(admin_url, "hm_upgrade") as url:
        yield url


def _rewind_to(url: str, version: int) -> None:
    """The schema as of ``version``: a database migrated that far and no further."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute(
            "CREATE TABLE schema_migration (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, name, text in migrations():
            if number > version:
                break
            with conn.transaction():
                conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO schema_migration (version, name) VALUES (%s, %s)", (number, name)
                )


def test_reads_an_older_node_left_unchained_are_chained_in_order_by_the_upgrade(
    database: str,
) -> None:
    _rewind_to(database, BEFORE_0023)
    grant = AccessGrant(client_id="old-node-app", scope="patient/*.rs", patient="ada")
    events = [
        audit.interaction_event(
            grant, "read", [audit.Touched("Observation", f"o{n}", "1", "ada")], audit.SUCCESS
        )
        for n in range(5)
    ]
    prepared = chain.prepare_events(events)
    with psycopg.connect(database) as conn:
        # What a 0017 node committed for each read: the resource, and its queued entry.
        for row in prepared.tables["resource"]:
            conn.execute(
                "INSERT INTO resource (res_type, id, version_id, last_updated, deleted,"
                " patient_id, content_hash, content) VALUES (%s, %s, 1, %s, false, %s,"
                " decode(%s, 'hex'), %s)",
                (
                    row["res_type"],
                    row["id"],
                    row["last_updated"],
                    row["patient_id"],
                    row["content_hash"][2:],
                    row["content"],
                ),
            )
        for entry in prepared.entries:
            conn.execute(
                "INSERT INTO audit_pending (entry) VALUES (%s::jsonb)",
                (orjson.dumps(entry).decode(),),
            )

    applied = migrate(database)
    assert applied[0].startswith("0023_")

    with psycopg.connect(database) as conn:
        chained = conn.execute("SELECT event_id FROM audit_chain ORDER BY seq").fetchall()
        queue = conn.execute(
            "SELECT to_regclass('audit_pending'), to_regproc('audit_chain_pending')"
        ).fetchone()
    assert [r[0] for r in chained] == [e["event_id"] for e in prepared.entries]
    assert queue == (None, None)

    async def verified() -> chain.Report:
        async with await psycopg.AsyncConnection.connect(database) as conn:
            return await chain.verify(conn)

    report = asyncio.run(verified())
    assert report.ok, [str(p) for p in report.problems]
    assert report.entries == len(events)
