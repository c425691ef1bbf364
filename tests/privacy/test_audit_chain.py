"""Recording AuditEvents: stored as resources, chained, in the caller's transaction, under
concurrent writers from several processes and connections, with periodic signed checkpoints."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest
from audit_support import fresh_database, read_event, run
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from healthmesh.interactions import write
from healthmesh.privacy import chain, checkpoints
from healthmesh.store import audit_store
from healthmesh.store.repository import Repository


@pytest.fixture
def audit_db(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        yield url


def _rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode(), params).fetchall()


def _observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "glucose"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_a_recorded_event_is_a_stored_auditevent_in_its_patients_compartment(
    audit_db: str,
) -> None:
    event = read_event("ada", n=2)
    seqs = run(audit_db, lambda conn: chain.record(conn, event))
    assert seqs == [1]
    [(patient_id, content)] = _rows(
        audit_db,
        "SELECT patient_id, content FROM resource WHERE res_type = 'AuditEvent' AND id = %s",
        (event["id"],),
    )
    assert patient_id == "ada"
    stored = orjson.loads(content)
    assert stored["entity"] == event["entity"] and stored["meta"]["versionId"] == "1"
    # Searchable like any resource: the reference index has the patient.
    assert _rows(
        audit_db,
        "SELECT target_id FROM search_reference WHERE res_type = 'AuditEvent' AND res_id = %s"
        " AND param = 'patient'",
        (event["id"],),
    ) == [("ada",)]
    [(seq, client, types, prev)] = _rows(
        audit_db, "SELECT seq, client_id, types, prev_hash FROM audit_chain"
    )
    assert (seq, client, types, bytes(prev)) == (1, "patient-app", ["Observation"], bytes(32))
    report = run(audit_db, chain.verify)
    assert report.ok and report.entries == 1


def test_each_entry_commits_to_its_predecessor(audit_db: str) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> None:
        for _ in range(3):
            await chain.record(conn, read_event("ada"))
        await chain.record(conn, [read_event("bob"), read_event("eve")])

    run(audit_db, body)
    rows = _rows(audit_db, "SELECT seq, prev_hash, hash, event_hash FROM audit_chain ORDER BY seq")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(rows):
        assert bytes(after[1]) == bytes(before[2])
        assert chain.link_hash(after[0], bytes(after[1]), bytes(after[3])) == bytes(after[2])
    assert _rows(audit_db, "SELECT seq FROM audit_head") == [(5,)]


def test_a_write_and_its_audit_commit_or_roll_back_together(audit_db: str) -> None:
    class Refused(Exception):
        pass

    async def failing(repository: Repository) -> None:
        async with repository.session() as session:
            await write.create(session, _observation("ada"), "Observation", id="gone")
            await chain.record(session, read_event("ada"))
            raise Refused  # anything failing later in the request

    async def body(conn: AsyncConnection[TupleRow]) -> None:
        repository = Repository(audit_db, min_size=1, max_size=2)
        await repository.open()
        try:
            with pytest.raises(Refused):
                await failing(repository)
            async with repository.session() as session:
                await write.create(session, _observation("ada"), "Observation", id="kept")
                await chain.record(session, read_event("ada"))
        finally:
            await repository.close()

    run(audit_db, body)
    ids = _rows(audit_db, "SELECT id FROM resource WHERE res_type = 'Observation' ORDER BY id")
    assert ids == [("kept",)]
    # The rolled-back append left no gap: the surviving entry is number 1.
    assert _rows(audit_db, "SELECT seq FROM audit_chain") == [(1,)]
    assert run(audit_db, chain.verify).ok


def test_when_the_audit_cannot_be_written_the_write_fails_and_nothing_is_stored(
    audit_db: str,
) -> None:
    async def audited_write(repository: Repository) -> None:
        async with repository.session() as session:
            await write.create(session, _observation("ada"), "Observation", id="o1")
            # The audit table refuses every row (in this transaction only).
            await session.conn.execute(
                "ALTER TABLE audit_chain ADD CONSTRAINT refuse CHECK (seq < 0) NOT VALID"
            )
            await chain.record(session, read_event("ada"))

    async def body(conn: AsyncConnection[TupleRow]) -> None:
        repository = Repository(audit_db, min_size=1, max_size=2)
        await repository.open()
        try:
            with pytest.raises(psycopg.errors.CheckViolation):
                await audited_write(repository)
        finally:
            await repository.close()

    run(audit_db, body)
    assert _rows(audit_db, "SELECT count(*) FROM resource") == [(0,)]
    assert _rows(audit_db, "SELECT count(*) FROM audit_chain") == [(0,)]


def test_when_the_audit_of_a_read_cannot_be_written_record_raises(audit_db: str) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> None:
        holder = await AsyncConnection.connect(audit_db)
        try:
            await audit_store.lock_head(holder)  # another transaction holds the head
            await conn.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await chain.record(conn, read_event("ada"))
        finally:
            await holder.rollback()
            await holder.close()

    run(audit_db, body)
    assert _rows(audit_db, "SELECT count(*) FROM audit_chain") == [(0,)]


def _append_many(url: str, worker: int, count: int) -> list[int]:
    """In another process: ``count`` appends, each its own transaction, every third a pair."""

    async def body(conn: AsyncConnection[TupleRow]) -> list[int]:
        seqs: list[int] = []
        for n in range(count):
            events = [read_event(f"p{worker}-{n}")]
            if n % 3 == 0:
                events.append(read_event(f"q{worker}-{n}"))
            seqs += await chain.record(conn, events, checkpoint_every=25)
        return seqs

    return run(url, body)


def test_concurrent_appends_from_several_processes_and_connections_leave_no_gap_or_duplicate(
    audit_db: str,
) -> None:
    workers, count = 3, 20
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_append_many, audit_db, w, count) for w in range(workers)]

        async def in_process() -> list[int]:
            async def one(w: int) -> list[int]:
                conn = await AsyncConnection.connect(audit_db, autocommit=True)
                try:
                    return [
                        s
                        for n in range(count)
                        for s in await chain.record(
                            conn, read_event(f"r{w}-{n}"), checkpoint_every=25
                        )
                    ]
                finally:
                    await conn.close()

            lists = await asyncio.gather(*(one(w) for w in range(3)))
            return [s for seqs in lists for s in seqs]

        local = asyncio.run(in_process())
        remote = [s for f in futures for s in f.result()]
    per_worker = count + (count + 2) // 3
    total = workers * per_worker + 3 * count
    every = sorted(local + remote)
    assert every == list(range(1, total + 1))
    assert _rows(audit_db, "SELECT count(*), min(seq), max(seq) FROM audit_chain") == [
        (total, 1, total)
    ]
    report = run(audit_db, chain.verify)
    assert report.ok, [str(p) for p in report.problems]
    assert report.entries == total and report.checkpoints >= total // 25 - 1


def test_checkpoints_are_signed_every_n_entries_and_verify(audit_db: str) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> list[checkpoints.Checkpoint]:
        for _ in range(12):
            await chain.record(conn, read_event("ada"), checkpoint_every=5)
        keys = await audit_store.public_keys(conn)
        return [checkpoints.check(*c, keys) for c in await audit_store.checkpoints(conn)]

    marks = run(audit_db, body)
    assert [(m.seq, m.kind, m.valid) for m in marks] == [
        (5, "periodic", True),
        (10, "periodic", True),
    ]
    hashes = dict(_rows(audit_db, "SELECT seq, hash FROM audit_chain WHERE seq IN (5, 10)"))
    assert [m.hash for m in marks] == [bytes(hashes[5]), bytes(hashes[10])]
    assert marks[0].claims["hash"] == bytes(hashes[5]).hex()


def test_the_application_cannot_update_or_delete_chain_entries(audit_db: str) -> None:
    run(audit_db, lambda conn: chain.record(conn, read_event("ada")))
    with psycopg.connect(audit_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_chain SET client_id = 'x'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit_chain")


def test_a_non_durable_record_is_committed_and_chained_like_any_other(audit_db: str) -> None:
    async def body(conn: AsyncConnection[TupleRow]) -> list[int]:
        first = await chain.record(conn, read_event("ada"), durable=False)
        return first + await chain.record(conn, read_event("bob"))

    assert run(audit_db, body) == [1, 2]
    with psycopg.connect(audit_db) as other:  # visible to another connection: committed
        assert other.execute("SELECT count(*) FROM audit_chain").fetchone() == (2,)
    assert run(audit_db, chain.verify).ok
