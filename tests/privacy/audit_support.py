"""Helpers for the audit-trail tests: a fresh database per test, async connections, grants.

The chain is one per database, and tampering tests break it on purpose, so each such test
gets its own database, cloned from a migrated template (fast: no migration per test).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit
from healthmesh.store.migrate import migrate

from conftest import _with_db

T = TypeVar("T")


@pytest.fixture(scope="session")
def audit_template(admin_url: str) -> Iterator[str]:
    name = f"hm_audit_tmpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(_with_db(admin_url, name))
    yield name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def audit_db(admin_url: str, audit_template: str) -> Iterator[str]:
    """A fresh migrated database (empty chain) for one test."""
    name = f"hm_audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(audit_template)
            )
        )
    yield _with_db(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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
        conn.execute(statement.encode(), params)  # type: ignore[call-overload]


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
