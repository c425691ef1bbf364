"""Recording reads' AuditEvents durably without queueing on the chain head.

A read's events must be on disk before its answer leaves (docs/privacy.md, "Audit"). When
each read appended to the chain itself, it held the chain head (``audit_head``, locked by
every append) across its commit's WAL flush, so concurrent reads — of every process — went
through one flush at a time: at 16 concurrent readers, secured throughput fell to a third.

Here the two steps are separated:

1. **durable, in batches, no lock**: a request hands its prepared events to the process's
   appender and waits. The appender commits everything waiting — the AuditEvent resources
   with their index rows, and their chain entries-to-be in ``audit_pending`` (migration
   0017) — as one transaction, in one round trip, and answers the waiters only after that
   commit returned (synchronous commit: the WAL is flushed). While a batch commits the next
   one gathers, so one WAL flush serves every request of a batch (group commit); and as no
   batch holds the chain head, batches commit side by side — up to ``WRITERS`` of a
   process, and those of several processes
   (PostgreSQL flushes their commit records together, too).
2. **chained, in order, soon after**: a chainer (one task per process, woken by every
   record) moves the queued entries, oldest first, into ``audit_chain`` under the head lock
   — numbered and hashed by the same ``audit_append`` as every other append — and deletes
   them from the queue in that same transaction. Chainers of several processes serialise on
   the head lock, so the chain stays gap-free and duplicate-free; an entry is chained
   exactly once. The chaining's commit need not wait for its flush: until it is on disk the
   queued rows are too, and a chaining lost in a crash is done again (here at start-up, or
   by ``healthmesh audit verify``, which chains what is queued before it judges).

Nothing an answer depends on is weaker: an answered read's record is durable; a request
whose record cannot be committed fails (:class:`AuditUnavailable`) and nothing of its batch
is stored (a batch is one transaction). Between 1 and 2 (milliseconds) an entry is durable and visible to the patient, but
not yet under a hash: like entries after the newest signed checkpoint, it is protected by
the database's access control alone until it is chained.

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
# Batches committing at once: while one waits for its flush the next can already be written.
WRITERS = 2
RETRY_SECONDS = 1.0  # a failed chaining is tried again after this (the rows wait, durable)


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
        writers: int = WRITERS,
        checkpoint_every: int | None = None,
    ) -> None:
        self._connect = connect
        self._durable = durable
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._waiting: list[tuple[chain.Prepared, asyncio.Future[None]]] = []
        self._writers: set[asyncio.Task[None]] = set()
        self._max_writers = writers
        self.batches = 0  # committed batches (tests, benchmarks)
        self._wanted = False
        self._chainer: asyncio.Task[None] | None = None
        self.chained = 0  # entries this process's chainer chained (tests, benchmarks)

    async def record(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Return once ``events`` are committed (durably, unless the appender is not);
        AuditUnavailable if they cannot be. The chain entries follow within milliseconds.
        The events are prepared (serialised, indexed, hashed) here, in the caller's turn."""
        if not events:
            return
        prepared = chain.prepare_events(events)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((prepared, done))
        if len(self._writers) < self._max_writers:
            self._writers.add(asyncio.create_task(self._write()))
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
                        await chain.record_pending(
                            conn,
                            chain.Prepared.joined([p for p, _ in batch]),
                            durable=self._durable,
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
                    continue
                self.batches += 1
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
                self.chain_soon()
        finally:
            # Leaves the set in the same step as the last look at the queue: a record() can
            # never find a writer counted that will not look again.
            current = asyncio.current_task()
            if current is not None:
                self._writers.discard(current)
            # Cancelled (the app shutting down): nobody may wait for ever, nor be told yes.
            stranded = batch + ([] if self._writers else self._waiting)
            for _, done in stranded:
                if not done.done():
                    done.set_exception(AuditUnavailable("the audit writer stopped"))
            if not self._writers:
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

    def chain_soon(self) -> None:
        """Have the chainer run (again) as soon as it can."""
        self._wanted = True
        if self._chainer is None:
            self._chainer = asyncio.create_task(self._chain())

    async def _chain(self) -> None:
        try:
            while self._wanted:
                self._wanted = False
                try:
                    async with self._connect() as conn:
                        self.chained += await chain.chain_pending(
                            conn, checkpoint_every=self._checkpoint_every
                        )
                except Exception as error:  # the entries wait in audit_pending, durable
                    log.warning("chaining audit entries failed (%s)", type(error).__name__)
                    await asyncio.sleep(RETRY_SECONDS)
                    self._wanted = True
        finally:
            self._chainer = None

    async def drain(self) -> None:
        """Wait until everything recorded so far is chained (tests, shutdown)."""
        while self._writers:
            await asyncio.shield(next(iter(self._writers)))
        self.chain_soon()
        while self._chainer is not None:
            await asyncio.shield(self._chainer)

    async def close(self) -> None:
        """Chain what is queued, then stop (the app's shutdown); errors are logged."""
        try:
            await asyncio.wait_for(self.drain(), timeout=5)
        except (TimeoutError, Exception) as error:
            log.warning("audit entries left to chain at shutdown (%s)", type(error).__name__)
            if self._chainer is not None:
                self._chainer.cancel()
