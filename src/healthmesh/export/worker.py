"""The background side of export: each server process takes jobs from the shared table.

A kick-off wakes its own process's worker at once; every worker also looks for work every
``poll_interval`` (jobs accepted by other processes, and running jobs whose process stopped
beating). A job a restart interrupted is therefore **resumed**, by being run again from the
start under a new snapshot, by whichever process looks first once its heartbeat is
``stale_after`` seconds old; after ``max_attempts`` runs it is marked failed instead, so a
job that kills its process cannot take the node down forever. Finished jobs past their
``retention`` are removed here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.export import jobs
from healthmesh.export.runner import ExportRunner
from healthmesh.export.settings import ExportSettings
from healthmesh.fhir.errors import FhirError, Issue, operation_outcome

log = logging.getLogger(__name__)
EXPIRE_EVERY = 60.0  # seconds between sweeps for expired jobs


class ExportWorker:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]],
        settings: ExportSettings,
        runner: ExportRunner,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.runner = runner
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._swept = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.run_one():
                    pass
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("export worker: unexpected error; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)

    async def run_one(self) -> bool:
        """Take one job and run it; False when there was none."""
        async with self.pool.connection() as conn:
            job = await jobs.claim(conn, self.name, stale_after=self.settings.stale_after)
        if job is None:
            return False
        if job.attempts > self.settings.max_attempts:
            await self._fail(
                job.id,
                500,
                f"The export was interrupted {job.attempts - 1} times and was given up;"
                " start a new one",
                code="incomplete",
            )
            return True
        try:
            await self.runner.run(job, self.name)
        except FhirError as error:  # the request's fault, found while running (a Group gone)
            await self._record(job.id, error.status, error.outcome())
        except asyncio.CancelledError:
            # Shutdown: the job stays 'running'; once its heartbeat is stale another process
            # (or this one, restarted) runs it again.
            raise
        except Exception:
            log.exception("export job %s failed", job.id)
            await self._fail(job.id, 500, "The export failed on the server; it has been logged")
        return True

    async def _fail(self, job_id: str, status: int, text: str, *, code: str = "exception") -> None:
        outcome = operation_outcome([Issue(severity="fatal", code=code, diagnostics=text)])
        await self._record(job_id, status, outcome)

    async def _record(self, job_id: str, status: int, outcome: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await jobs.fail(conn, job_id, self.name, status, outcome, self.settings.retention)

    async def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < EXPIRE_EVERY:
            return
        self._swept = now
        async with self.pool.connection() as conn:
            removed = await jobs.expire(conn)
        if removed:
            log.info("export: removed %d expired jobs", removed)
