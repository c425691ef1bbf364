"""Recording reads' AuditEvents durably, by group commit.

A read's events must be on disk, and in the chain, before its answer leaves (docs/privacy.md,
"Audit"). Appending to the chain locks its head (``audit_head``) until the commit, WAL flush
included; when every read appended on its own, concurrent reads — of every process — went
through one flush at a time (at 16 concurrent readers, secured throughput fell to a third).

So a request hands its prepared events to its process's appender and waits. The appender's
one writer stores and chains everything waiting — the AuditEvent resources, their index
rows and their chain entries — in one transaction of one statement (``audit_record``,
migration 0023), and answers the waiters once that commit has returned (synchronous commit:
the WAL is flushed). While a batch commits the next one gathers, so one WAL flush, and one
hold of the head, serves every request of a batch (group commit). Writers of several
processes serialise on the head, batch by batch; the chain stays gap-free and duplicate-free.

Nothing an answer depends on is weakened: an answered read's record is durable and chained;
a request whose record cannot be committed fails (:class:`AuditUnavailable`) and nothing of
its batch is stored (a batch is one transaction).

Writes do not come here: their events belong in their own transaction (chain.record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from healthmesh.privacy import chain

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[TupleRow]]]
MAX_BATCH_EVENTS = 1000  # bounds one transaction; more than any process's concurrency


class AuditUnavailable(Exception):
    """The events could not be recorded; the request they describe must fail."""


class AuditAppender:
    """The process's recorder of reads' (and refusals', tokens', logins' …) AuditEvents.

    ``connect`` lends a connection outside any transaction (a pool's ``connection``).
    """

    def __init__(
        self,
        connect: Connect,
        *,
        durable: bool = True,
        max_batch: int = MAX_BATCH_EVENTS,
        checkpoint_every: int | None = None,
    ) -> None:
        self._connect = connect
        self._durable = durable
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._waiting: list[tuple[chain.Prepared, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # committed batches (tests, benchmarks)

    async def record(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Return once ``events`` are committed and chained (durably, unless the appender is
        not); AuditUnavailable if they cannot be. The events are prepared (serialised,
        indexed, hashed) here, in the caller's turn."""
        if events:
            await self.record_prepared(chain.prepare_events(events))

    async def record_prepared(self, prepared: chain.Prepared) -> None:
        """:meth:`record` for events prepared already (chain.prepare_events,
        privacy/read_events.py)."""
        if not len(prepared):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((prepared, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        # A waiter that goes away (client disconnect) leaves its events to be written all
        # the same: the access was attempted, and the batch is shared.
        await asyncio.shield(done)

    async def _write(self) -> None:
        batch: list[tuple[chain.Prepared, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = self._take()
                try:
                    async with self._connect() as conn:
                        await chain.append_prepared(
                            conn,
                            chain.Prepared.joined([p for p, _ in batch]),
                            durable=self._durable,
                            checkpoint_every=self._checkpoint_every,
                        )
                except Exception as error:  # the database, the pool, a bug: nothing stored
                    log.error(
                        "the audit trail could not be written (%s): failing %d requests",
                        type(error).__name__,
                        len(batch),
                    )
                    failure = AuditUnavailable(type(error).__name__)
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(failure)
                    batch = []
                    continue
                self.batches += 1
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
                batch = []
        finally:
            # Leaves in the same step as the last look at the queue: a record() can never
            # find a writer that will not look again.
            self._writer = None
            # Cancelled (the app shutting down): nobody may wait for ever, nor be told yes.
            for _, done in batch + self._waiting:
                if not done.done():
                    done.set_exception(AuditUnavailable("the audit writer stopped"))
            self._waiting.clear()

    def _take(self) -> list[tuple[chain.Prepared, asyncio.Future[None]]]:
        """The oldest waiters, up to ``max_batch`` events (at least one waiter)."""
        taken, size = 0, 0
        for prepared, _ in self._waiting:
            if taken and size + len(prepared) > self._max_batch:
                break
            taken += 1
            size += len(prepared)
        batch = self._waiting[:taken]
        del self._waiting[:taken]
        return batch

    async def drain(self) -> None:
        """Wait until everything recorded so far is committed (tests, shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        """Commit what is waiting, then stop (the app's shutdown); errors are logged."""
        try:
            await asyncio.wait_for(self.drain(), timeout=5)
        except (TimeoutError, Exception) as error:
            log.warning("audit events left unwritten at shutdown (%s)", type(error).__name__)
            if self._writer is not None:
                self._writer.cancel()
