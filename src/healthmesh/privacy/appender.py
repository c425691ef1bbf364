"""Group commit for the audit trail: many requests' AuditEvents in one transaction.

A read's events must be durable before its answer leaves (docs/privacy.md, "Audit"). Each
read committing on its own pays a WAL flush and holds the chain head (``audit_head``, locked
by every append) across it, so concurrent reads queue on the lock one flush at a time. Here a
request hands its prepared events to the process's one appender and waits; the appender
writes everything that is waiting as one append — one head lock, one statement per table,
one commit, one WAL flush, in one round trip — and then answers every waiter. While a batch
commits, the next one gathers, so the batch grows with the load (PostgreSQL's own group
commit does the same for WAL flushes; ``commit_delay`` in its manual).

Nothing is weaker than appending one request at a time:

- durable: a waiter is answered only after its batch's COMMIT returned (synchronous commit,
  the WAL flushed), so no answer leaves before its record is on disk;
- all or nothing: a batch is one transaction; if it fails, every waiter gets
  :class:`AuditUnavailable` and must fail its request — nothing was recorded, and no
  sequence number was used (the head moves only on commit);
- the chain: the batch's entries are numbered and hashed by ``audit_append`` under the head
  lock exactly as single appends are, in the order the requests arrived, so appends of
  several processes (each with its own appender) still serialise on the lock with no gaps
  or duplicates.

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
# Enough for any concurrency a process serves; bounds one transaction's size.
MAX_BATCH_EVENTS = 1000


class AuditUnavailable(Exception):
    """The events could not be recorded; the request they describe must fail."""


class GroupAppender:
    """The process's appender of reads' (and refusals') AuditEvents, by group commit.

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
        self.batches = 0  # committed batches, for tests and benchmarks
        self.events = 0

    async def record(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Return once ``events`` are committed to the chain; AuditUnavailable if they
        cannot be. The events are prepared (serialised, indexed, hashed) here, in the
        caller's turn, so the writer does only I/O."""
        if not events:
            return
        prepared = chain.prepare_events(events)
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
                except Exception as error:  # the database, the pool, a bug: no record
                    log.error(
                        "the audit trail could not be written (%s): failing %d requests",
                        type(error).__name__,
                        len(batch),
                    )
                    failure = AuditUnavailable(type(error).__name__)
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(failure)
                    continue
                self.batches += 1
                self.events += sum(len(p) for p, _ in batch)
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writer = None
            # Cancelled (the app shutting down): nobody may wait for ever, nor be told yes.
            for _, done in [*batch, *self._waiting]:
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
