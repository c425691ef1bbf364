"""Helpers for the audit-trail tests: a fresh database per test, async connections, grants.

The chain is one per database, and tampering tests break it on purpose, so each such test
gets its own database, cloned from a migrated template (fast: no migration per test).
"""

from __future__ import annotations

import asyncio
import atexit
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit
from healthmesh.store.migrate import migrate

from conftest import _with_db

T = TypeVar("T")


_templates: dict[str, str] = {}  # admin URL -> migrated template database, per process


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _template(admin_url: str) -> str:
    if admin_url not in _templates:
        name = f"hm_audit_tmpl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        atexit.register(_drop, admin_url, name)
        migrate(_with_db(admin_url, name))
        _templates[admin_url] = name
    return _templates[admin_url]


_reusable: dict[str, str] = {}  # admin URL -> this process's scratch database


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A migrated database with an empty chain and no resources, for one test.

    One scratch database per test process (cloned from the template once) is emptied for
    each test: TRUNCATE is much cheaper than creating and dropping a database every time.
    """
    url = _reusable.get(admin_url)
    if url is None:
        name = f"hm_audit_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(_template(admin_url))
                )
            )
        atexit.register(_drop, admin_url, name)
        url = _reusable[admin_url] = _with_db(admin_url, name)
    _empty(url)
    yield url


def _empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migration'"
            )
        ]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
        conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, %s)", (bytes(32),))


def run(url: str, body: Callable[[AsyncConnection[TupleRow]], Awaitable[T]]) -> T:
    """Run ``body`` on one autocommit async connection to ``url``."""

    async def go() -> T:
        conn = await AsyncConnection.connect(url, autocommit=True)
        try:
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def tamper(url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Raw SQL behind the node's back, past the append-only trigger (as a superuser could)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement.encode(), params)


def patient_grant(patient: str, client_id: str = "patient-app") -> AccessGrant:
    return AccessGrant(
        client_id=client_id,
        scope="patient/*.rs openid fhirUser",
        patient=patient,
        fhir_user=f"Patient/{patient}",
        purpose_of_use="PATRQT",
        grant_id="g-1",
    )


def read_event(patient: str, client_id: str = "patient-app", n: int = 1) -> dict[str, Any]:
    touched = [audit.Touched("Observation", f"o{i}", "1", patient) for i in range(n)]
    return audit.interaction_event(
        patient_grant(patient, client_id),
        "search-type",
        touched,
        audit.SUCCESS,
        query=f"Observation?patient={patient}",
        address="127.0.0.1",
    )
