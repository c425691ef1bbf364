"""Export jobs, files and chunks in PostgreSQL (migration 0020, docs/export.md).

Every process of a node shares these rows: any of them may take an accepted job, answer its
status or serve its files. A job is only ever seen by its owner (the client and user that
started it); a job of someone else and a job that does not exist look the same (None).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from healthmesh.auth.grant import AccessGrant

Conn = AsyncConnection[TupleRow]
ACTIVE = ("accepted", "running")


class TooManyJobs(Exception):
    """The owner already has the allowed number of jobs accepted or running."""


def new_job_id() -> str:
    return secrets.token_hex(16)


def owner_of(grant: AccessGrant | None) -> str | None:
    """Who a job belongs to: the client, and the user or patient it acts for. Another app, or
    the same app for another person, is someone else. None: --open (no one to tell apart)."""
    if grant is None:
        return None
    parts = [f"client:{grant.client_id}"]
    if grant.fhir_user:
        parts.append(f"user:{grant.fhir_user}")
    if grant.patient:
        parts.append(f"patient:{grant.patient}")
    return "|".join(parts)


def grant_facts(grant: AccessGrant | None) -> str | None:
    """What the runner needs of the grant to rebuild its Visibility; never the token."""
    if grant is None:
        return None
    return orjson.dumps(
        {
            "client_id": grant.client_id,
            "scope": grant.scope,
            "patient": grant.patient,
            "fhir_user": grant.fhir_user,
            "organization": grant.organization,
            "purpose_of_use": grant.purpose_of_use,
            "grant_id": grant.grant_id,
        }
    ).decode()


def grant_of(facts: str | None) -> AccessGrant | None:
    if facts is None:
        return None
    return AccessGrant(**orjson.loads(facts))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: str | None
    grant: str | None
    request: str
    params: str
    status: str
    attempts: int
    progress: str | None
    transaction_time: datetime | None
    expires_at: datetime | None
    error_status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ExportFile:
    n: int
    kind: str  # output | error
    res_type: str
    count: int
    patients: list[str]
    consents: str | None


def _job(row: Sequence[Any]) -> Job:
    return Job(*row)


async def create(
    conn: Conn,
    *,
    owner: str | None,
    grant: str | None,
    request: str,
    params: str,
    max_active: int,
) -> str:
    """A new accepted job; TooManyJobs when the owner has ``max_active`` in flight already."""
    job_id = new_job_id()
    async with conn.transaction():
        # One owner's kick-offs are serialised, so the limit holds across processes.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('export:' || %s))", (owner or "",)
        )
        cur = await conn.execute(
            "SELECT count(*) FROM export_job"
            " WHERE owner IS NOT DISTINCT FROM %(owner)s AND status = ANY(%(active)s)",
            {"owner": owner, "active": list(ACTIVE)},
        )
        row = await cur.fetchone()
        if row is not None and int(row[0]) >= max_active:
            raise TooManyJobs
        await conn.execute(
            "INSERT INTO export_job (id, owner, grant_facts, request, params, status)"
            " VALUES (%s, %s, %s, %s, %s, 'accepted')",
            (job_id, owner, grant, request, params),
        )
    return job_id


async def get(conn: Conn, job_id: str, owner: str | None) -> Job | None:
    """The job if ``owner``'s and not expired; None otherwise (whichever it is)."""
    cur = await conn.execute(
        "SELECT id, owner, grant_facts, request, params, status, attempts, progress,"
        " transaction_time, expires_at, error_status, error FROM export_job"
        " WHERE id = %(id)s AND owner IS NOT DISTINCT FROM %(owner)s"
        " AND (expires_at IS NULL OR expires_at > now())",
        {"id": job_id, "owner": owner},
    )
    row = await cur.fetchone()
    return _job(row) if row else None


async def delete(conn: Conn, job_id: str, owner: str | None) -> bool:
    """Cancel (or discard) a job: its files and chunks go with it (ON DELETE CASCADE)."""
    cur = await conn.execute(
        "DELETE FROM export_job WHERE id = %(id)s AND owner IS NOT DISTINCT FROM %(owner)s"
        " AND (expires_at IS NULL OR expires_at > now())",
        {"id": job_id, "owner": owner},
    )
    return cur.rowcount > 0


async def claim(conn: Conn, worker: str, *, stale_after: int) -> Job | None:
    """Take the oldest accepted job, or a running one whose process stopped beating (a
    restart, a crash): that one is run again from the start (docs/export.md, "Restarts")."""
    cur = await conn.execute(
        "UPDATE export_job SET status = 'running', attempts = attempts + 1, worker = %(w)s,"
        " heartbeat_at = now(), progress = 'starting'"
        " WHERE id = (SELECT id FROM export_job WHERE status = 'accepted'"
        "   OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => %(stale)s))"
        "   ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)"
        " RETURNING id, owner, grant_facts, request, params, status, attempts, progress,"
        " transaction_time, expires_at, error_status, error",
        {"w": worker, "stale": stale_after},
    )
    row = await cur.fetchone()
    return _job(row) if row else None


async def beat(conn: Conn, job_id: str, worker: str, progress: str) -> bool:
    """Still ours and still wanted? False once the job was cancelled or taken over."""
    cur = await conn.execute(
        "UPDATE export_job SET heartbeat_at = now(), progress = %s"
        " WHERE id = %s AND worker = %s AND status = 'running'",
        (progress[:200], job_id, worker),
    )
    return cur.rowcount > 0


async def complete(
    conn: Conn, job_id: str, worker: str, transaction_time: datetime, retention: int
) -> bool:
    cur = await conn.execute(
        "UPDATE export_job SET status = 'completed', progress = 'completed',"
        " transaction_time = %s, finished_at = now(),"
        " expires_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND worker = %s AND status = 'running'",
        (transaction_time, retention, job_id, worker),
    )
    return cur.rowcount > 0


async def fail(
    conn: Conn,
    job_id: str,
    worker: str | None,
    status: int,
    outcome: dict[str, Any],
    retention: int,
) -> None:
    """Mark a job failed with an OperationOutcome; its partial files are removed."""
    async with conn.transaction():
        await conn.execute("DELETE FROM export_file WHERE job_id = %s", (job_id,))
        await conn.execute(
            "UPDATE export_job SET status = 'failed', progress = 'failed', finished_at = now(),"
            " expires_at = now() + make_interval(secs => %s), error_status = %s, error = %s"
            " WHERE id = %s AND (%s::text IS NULL OR worker = %s)",
            (retention, status, orjson.dumps(outcome).decode(), job_id, worker, worker),
        )


async def reset_files(conn: Conn, job_id: str) -> None:
    """Before a (re-)run: nothing of an earlier attempt stays."""
    await conn.execute("DELETE FROM export_file WHERE job_id = %s", (job_id,))


async def start_file(conn: Conn, job_id: str, n: int, kind: str, res_type: str) -> None:
    await conn.execute(
        "INSERT INTO export_file (job_id, n, kind, res_type) VALUES (%s, %s, %s, %s)",
        (job_id, n, kind, res_type),
    )


async def add_chunk(conn: Conn, job_id: str, n: int, seq: int, data: bytes) -> None:
    await conn.execute(
        "INSERT INTO export_chunk (job_id, n, seq, data) VALUES (%s, %s, %s, %s)",
        (job_id, n, seq, data),
    )


async def finish_file(
    conn: Conn, job_id: str, n: int, count: int, patients: list[str], consents: str | None
) -> None:
    await conn.execute(
        "UPDATE export_file SET count = %s, patients = %s, consents = %s"
        " WHERE job_id = %s AND n = %s",
        (count, patients, consents, job_id, n),
    )


async def files(conn: Conn, job_id: str) -> list[ExportFile]:
    cur = await conn.execute(
        "SELECT n, kind, res_type, count, patients, consents FROM export_file"
        " WHERE job_id = %s ORDER BY n",
        (job_id,),
    )
    return [ExportFile(*row) for row in await cur.fetchall()]


async def file(conn: Conn, job_id: str, n: int) -> ExportFile | None:
    cur = await conn.execute(
        "SELECT n, kind, res_type, count, patients, consents FROM export_file"
        " WHERE job_id = %s AND n = %s",
        (job_id, n),
    )
    row = await cur.fetchone()
    return ExportFile(*row) if row else None


async def chunks(conn: Conn, job_id: str, n: int) -> AsyncIterator[bytes]:
    """A file's bytes, one stored chunk at a time (a file can be far larger than memory)."""
    seq = 0
    while True:
        cur = await conn.execute(
            "SELECT data FROM export_chunk WHERE job_id = %s AND n = %s AND seq = %s",
            (job_id, n, seq),
        )
        row = await cur.fetchone()
        if row is None:
            return
        yield bytes(row[0])
        seq += 1


async def expire(conn: Conn) -> int:
    """Remove jobs past their expiry, with their files; how many."""
    cur = await conn.execute("DELETE FROM export_job WHERE expires_at <= now()")
    return cur.rowcount


# --- consent since production -----------------------------------------------------------------
# The Consents of a file's patients as one value: any create, update or delete of one of them
# changes it (a new version id, a new row). Tombstones are rows of `resource` too.
CONSENT_FINGERPRINT = (
    "SELECT md5(coalesce(string_agg(c.id || ':' || c.version_id, ',' ORDER BY c.id), ''))"
    " FROM resource c WHERE c.res_type = 'Consent' AND c.patient_id = ANY(%s)"
)


async def consent_fingerprint(conn: Conn, patients: list[str]) -> str:
    cur = await conn.execute(CONSENT_FINGERPRINT, (patients,))
    row = await cur.fetchone()
    return str(row[0]) if row else ""


async def decisions_changed(conn: Conn, f: ExportFile, produced: datetime) -> bool:
    """Whether a decision about the data of file ``f`` changed since it was read at
    ``produced``: a Consent of one of its patients written or deleted, a Consent period of
    theirs begun or ended since, or the sensitive-data label rules re-applied since."""
    if not f.patients:
        return False  # reference data only: no patient's decision governs it
    if await consent_fingerprint(conn, f.patients) != f.consents:
        return True
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM consent_rule WHERE patient_id = ANY(%(p)s)"
        "   AND (period_start > %(t)s AND period_start <= now()"
        "     OR period_end > %(t)s AND period_end <= now()))"
        " OR EXISTS (SELECT 1 FROM label_rules_state WHERE relabelled_at > %(t)s)",
        {"p": f.patients, "t": produced},
    )
    row = await cur.fetchone()
    return bool(row and row[0])
