"""Running one export job: read a snapshot with server-side cursors, store NDJSON chunks.

All types are read in one REPEATABLE READ, READ ONLY transaction, so every file shows the
same moment (the manifest's ``transactionTime``) and a resource written meanwhile is in the
next ``_since`` export, not half in this one. Rows stream through a named (server-side)
cursor in batches; the NDJSON is written, in chunks of about ``chunk_bytes``, on a second
connection, each chunk committed on its own so that memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from psycopg import AsyncConnection, sql
from psycopg.errors import ForeignKeyViolation
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.policy import visibility_for
from healthmesh.export import jobs
from healthmesh.export.params import ExportRequest
from healthmesh.export.query import (
    EXISTING_TYPES,
    export_types,
    filter_clauses,
    group_members,
    type_query,
)
from healthmesh.export.settings import ExportSettings
from healthmesh.fhir.errors import Issue, NotFound, operation_outcome
from healthmesh.interactions.valuesets import expand_value_sets
from healthmesh.store.access import Visibility
from healthmesh.store.repository import Session

log = logging.getLogger(__name__)
FETCH = 2000  # rows per FETCH from the server-side cursor
# transactionTime: the snapshot's start, or earlier if a write was already in flight then
# (its rows, stamped before they commit, are not in this snapshot: a client exporting
# _since=transactionTime next time must not miss them).
_SNAPSHOT_TIME = (
    "SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity"
    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
    " AND pid <> pg_backend_pid()))"
)


class Cancelled(Exception):
    """The job was deleted (cancelled, expired) or taken over while running."""


@dataclass
class _Progress:
    types: int = 0
    done_types: int = 0
    resources: int = 0
    current: str = ""
    stopped: bool = False  # the heartbeat found the job cancelled or taken over

    def text(self) -> str:
        if not self.current:
            return "starting"
        return (
            f"{self.resources} resources exported; {self.current}"
            f" (type {self.done_types + 1} of {self.types})"
        )


@dataclass
class _FileWriter:
    """One output file being written: its chunks, count and patients."""

    job_id: str
    n: int
    chunk_bytes: int
    buffer: list[bytes] = field(default_factory=list)
    size: int = 0
    seq: int = 0
    count: int = 0
    patients: set[str] = field(default_factory=set)
    pending: asyncio.Task[None] | None = None  # the chunk being written while we read on


class ExportRunner:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        settings: ExportSettings,
        *,
        consent_default_permit: bool = True,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.consent_default_permit = consent_default_permit

    def visibility(self, grant: AccessGrant | None) -> Visibility | None:
        if grant is None:
            return None
        return visibility_for(grant, consent_default_permit=self.consent_default_permit)

    async def run(self, job: jobs.Job, worker: str) -> None:
        """Run ``job`` to completion (or failure, recorded on the job)."""
        request = ExportRequest.from_json(job.params)
        visibility = self.visibility(jobs.grant_of(job.grant))
        progress = _Progress()
        async with self.pool.connection() as out:
            await jobs.reset_files(out, job.id)
            beating = asyncio.create_task(self._beat(job.id, worker, progress))
            try:
                moment = await self._export(job.id, request, visibility, out, progress)
            except Cancelled:
                log.info("export job %s was cancelled while running", job.id)
                return
            finally:
                beating.cancel()
            if not await jobs.complete(out, job.id, worker, moment, self.settings.retention):
                log.info("export job %s finished after it was cancelled", job.id)

    async def _beat(self, job_id: str, worker: str, progress: _Progress) -> None:
        """Heartbeat (and progress) while the job runs, on a connection of its own: a long
        FETCH must not make another process think this one died."""
        interval = max(self.settings.stale_after / 3, 0.2)
        while True:
            async with self.pool.connection() as conn:
                if not await jobs.beat(conn, job_id, worker, progress.text()):
                    progress.stopped = True
                    return
            await asyncio.sleep(interval)

    async def _export(
        self,
        job_id: str,
        request: ExportRequest,
        visibility: Visibility | None,
        out: AsyncConnection[TupleRow],
        progress: _Progress,
    ) -> datetime:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Every row is read: plan for the whole result, not the first rows (the default
            # for cursors, 0.1), which picks index scans where a sequential scan is faster.
            await conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
            cur = await conn.execute(_SNAPSHOT_TIME)
            row = await cur.fetchone()
            assert row is not None
            moment: datetime = row[0]
            members = await self._members(conn, request, visibility)
            existing = [r[0] for r in await (await conn.execute(EXISTING_TYPES)).fetchall()]
            types, warnings = export_types(request, visibility, existing)
            progress.types = len(types)
            n = 0
            for res_type in types:
                progress.current = res_type
                filters = [
                    await expand_value_sets(Session(conn, visibility), clauses)
                    for clauses in filter_clauses(request, res_type)
                ]
                query = type_query(
                    request, res_type, visibility=visibility, filters=filters, members=members
                )
                n = await self._write_type(conn, out, job_id, res_type, query, n, progress)
                progress.done_types += 1
            notes = [*request.warnings, *warnings]
            if notes:
                await self._write_warnings(out, job_id, n + 1, notes)
        return moment

    async def _members(
        self,
        conn: AsyncConnection[TupleRow],
        request: ExportRequest,
        visibility: Visibility | None,
    ) -> list[str] | None:
        if request.level != "group" or request.group is None:
            return None
        group = await Session(conn, visibility).readable("Group", request.group)
        if group is None or group.deleted or group.content is None:
            raise NotFound(f"Group/{request.group} is not known")
        return group_members(group.content)

    async def _write_type(
        self,
        conn: AsyncConnection[TupleRow],
        out: AsyncConnection[TupleRow],
        job_id: str,
        res_type: str,
        query: sql.Composed,
        n: int,
        progress: _Progress,
    ) -> int:
        """Stream one type into one file or more; the last file number used."""
        writer: _FileWriter | None = None
        async with conn.cursor(name=f"export_{res_type.lower()}") as cursor:
            await cursor.execute(query)
            while rows := await cursor.fetchmany(FETCH):
                if progress.stopped:
                    raise Cancelled
                for _id, patient, content in rows:
                    if writer is None or self._full(writer, patient):
                        if writer is not None:
                            await self._finish(conn, out, writer)
                        n += 1
                        writer = _FileWriter(job_id, n, self.settings.chunk_bytes)
                        await self._start(out, job_id, n, res_type)
                    data = content.encode()
                    writer.buffer.append(data)
                    writer.buffer.append(b"\n")
                    writer.size += len(data) + 1
                    writer.count += 1
                    if patient is not None:
                        writer.patients.add(patient)
                    if writer.size >= writer.chunk_bytes:
                        await self._flush(out, writer)
                progress.resources += len(rows)
        if writer is not None:
            await self._finish(conn, out, writer)
        return n

    def _full(self, writer: _FileWriter, patient: str | None) -> bool:
        """Whether the row must go to a new file: this one has its resources, or its
        patients and the row belongs to another one."""
        if writer.count >= self.settings.max_file_resources:
            return True
        return (
            patient is not None
            and patient not in writer.patients
            and len(writer.patients) >= self.settings.max_file_patients
        )

    async def _start(self, out: AsyncConnection[TupleRow], job_id: str, n: int, t: str) -> None:
        try:
            await jobs.start_file(out, job_id, n, "output", t)
        except ForeignKeyViolation as exc:  # the job row is gone: cancelled
            raise Cancelled from exc

    async def _flush(self, out: AsyncConnection[TupleRow], writer: _FileWriter) -> None:
        """Hand the buffered lines to the writing connection; the read goes on meanwhile
        (one chunk in flight at a time, so memory stays at two chunks)."""
        if not writer.buffer:
            return
        await self._settle(writer)
        data = b"".join(writer.buffer)
        writer.pending = asyncio.create_task(
            jobs.add_chunk(out, writer.job_id, writer.n, writer.seq, data)
        )
        writer.seq += 1
        writer.buffer, writer.size = [], 0

    async def _settle(self, writer: _FileWriter) -> None:
        pending, writer.pending = writer.pending, None
        if pending is None:
            return
        try:
            await pending
        except ForeignKeyViolation as exc:  # the file row is gone with its job: cancelled
            raise Cancelled from exc

    async def _finish(
        self, conn: AsyncConnection[TupleRow], out: AsyncConnection[TupleRow], writer: _FileWriter
    ) -> None:
        await self._flush(out, writer)
        await self._settle(writer)
        patients = sorted(writer.patients)
        # The Consents as the snapshot saw them: what the file's rows were filtered with.
        consents = await jobs.consent_fingerprint(conn, patients) if patients else None
        await jobs.finish_file(out, writer.job_id, writer.n, writer.count, patients, consents)

    async def _write_warnings(
        self, out: AsyncConnection[TupleRow], job_id: str, n: int, notes: list[str]
    ) -> None:
        """The manifest's error file: one warning OperationOutcome per note (export.html:
        "error … array of OperationOutcome files")."""
        lines = [
            orjson.dumps(
                operation_outcome([Issue(severity="warning", code="informational", diagnostics=t)])
            )
            for t in notes
        ]
        try:
            await jobs.start_file(out, job_id, n, "error", "OperationOutcome")
            await jobs.add_chunk(out, job_id, n, 0, b"\n".join(lines) + b"\n")
        except ForeignKeyViolation as exc:
            raise Cancelled from exc
        await jobs.finish_file(out, job_id, n, len(lines), [], None)
