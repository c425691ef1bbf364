"""Recording AuditEvents in a hash chain, and verifying the chain.

Entry ``n`` stores ``event_hash`` = sha256 of the canonical event (its JSON with sorted keys,
meta.versionId/lastUpdated left out: ``store/rows.content_hash``), ``prev_hash`` = the hash of
entry ``n-1`` (32 zero bytes before the first), and
``hash = sha256("healthmesh-audit-v1" | n as 8 bytes | prev_hash | event_hash)``. So an
edited event changes its event_hash, and a deleted, inserted or reordered entry breaks the
``seq`` run or the ``prev_hash`` link; signed checkpoints (privacy/checkpoints.py) anchor the
hashes so that recomputing the whole chain does not hide an edit either.

Appends take the one-row ``audit_head`` lock (``SELECT … FOR UPDATE``) in the caller's
transaction: appends from every process are serialised, a rolled-back transaction takes its
entries with it, and there are no gaps and no duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from psycopg import AsyncConnection, pq
from psycopg.rows import TupleRow

from healthmesh.fhir.search.audit_index import RECURRING, audit_event_rows, recurring_key
from healthmesh.privacy import checkpoints
from healthmesh.privacy.audit import (
    CLIENT_ID,
    OBJECT_ROLE,
    SCOPE_EXTENSION,
    kind_of,
)
from healthmesh.store import audit_store
from healthmesh.store.audit_store import Conn
from healthmesh.store.repository import Session
from healthmesh.store.rows import content_hash, now, prepare

GENESIS = bytes(32)
_DOMAIN = b"healthmesh-audit-v1"


def link_hash(seq: int, prev_hash: bytes, event_hash: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + seq.to_bytes(8, "big") + prev_hash + event_hash).digest()


@dataclass(frozen=True, slots=True)
class Facts:
    """What the breach detectors need of an event, kept in columns of its chain entry."""

    kind: str
    client_id: str | None
    address: str | None
    patient_id: str | None
    action: str | None
    outcome: str
    system_access: bool
    object: str | None
    types: tuple[str, ...]


FACT_FIELDS = tuple(f.name for f in fields(Facts))


def facts_of(event: Mapping[str, Any], key: bytes | None = None) -> Facts:
    """``key``: the event's recurring parts (fhir/search/audit_index.recurring_key), whose
    facts — the kind, the client, its address and scopes — are then looked up, not read."""
    kind, client, address, system_access = (
        _agent_facts(kind_of(event), event.get("agent")) if key is None else recurring_facts(key)
    )
    patient = obj = None
    types: set[str] = set()
    for entity in event.get("entity") or ():
        role = entity.get("role") or {}
        what = entity.get("what") or {}
        role_code = role.get("code") if role.get("system") == OBJECT_ROLE else None
        reference = str(what.get("reference") or "")
        if role_code == "1" and patient is None and reference.startswith("Patient/"):
            patient = reference.removeprefix("Patient/")
        elif role_code == "4" and reference:
            types.add(reference.split("/", 1)[0])
        if obj is None and (what.get("identifier") or {}).get("value"):
            obj = str(what["identifier"]["value"])
    return Facts(
        kind=kind,
        client_id=client,
        address=address,
        patient_id=patient,
        action=event.get("action"),
        outcome=str(event.get("outcome", "")),
        system_access=system_access,
        object=obj,
        types=tuple(sorted(types)),
    )


_AgentFacts = tuple[str, str | None, str | None, bool]


def _agent_facts(kind: str, agents: Any) -> _AgentFacts:
    client = address = None
    system_access = False
    for agent in agents or ():
        identifier = (agent.get("who") or {}).get("identifier") or {}
        if client is None and identifier.get("system") == CLIENT_ID:
            client = identifier.get("value")
        if address is None:
            address = (agent.get("network") or {}).get("address")
        for ext in agent.get("extension") or ():
            if ext.get("url") == SCOPE_EXTENSION:
                scopes = str(ext.get("valueString", "")).split()
                system_access = system_access or any(s.startswith("system/") for s in scopes)
    return kind, client, address, system_access


@lru_cache(maxsize=4096)
def recurring_facts(key: bytes) -> _AgentFacts:
    parts = dict(zip(RECURRING, orjson.loads(key), strict=True))
    return _agent_facts(kind_of(parts), parts["agent"])


def _conn(target: Session | AsyncConnection[TupleRow]) -> Conn:
    return target.conn if isinstance(target, Session) else target


@dataclass(frozen=True, slots=True)
class Prepared:
    """Events made ready for the chain: everything that needs no lock, done before taking it —
    their rows for ``audit_record`` (store/audit_store.event_tables) and chain entries."""

    tables: audit_store.Tables
    entries: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def joined(parts: Sequence[Prepared]) -> Prepared:
        """Several requests' events as one, in the order given (the appender's batches)."""
        return Prepared(
            audit_store.joined_tables([p.tables for p in parts]),
            [e for p in parts for e in p.entries],
        )


def prepare_events(events: Sequence[Mapping[str, Any]], at: datetime | None = None) -> Prepared:
    """Each event as its stored version (resource and index rows) and its chain entry
    (event hash and facts), stored at ``at`` (now). CPU only: callers do it before any lock
    or transaction."""
    at = at or now()
    versions = []
    entries = []
    for e in events:
        key = recurring_key(e)
        fact = facts_of(e, key)
        version = prepare(
            dict(e),
            version_id=1,
            last_updated=at,
            index=audit_event_rows(e, key),
            patient_id=fact.patient_id,
        )
        versions.append(version)
        entries.append(
            {
                "event_id": version.id,
                "recorded": str(e["recorded"]),
                "event_hash": version.content_hash.hex(),
                # asdict() deep-copies, at ten times the cost of reading the fields.
                **{name: getattr(fact, name) for name in FACT_FIELDS},
            }
        )
    return Prepared(audit_store.event_tables(versions), entries)


async def record(
    target: Session | AsyncConnection[TupleRow],
    event: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    durable: bool = True,
    checkpoint_every: int | None = None,
) -> list[int]:
    """Append one event (or several, in order) to the audit trail; their sequence numbers.

    Inside a transaction (a write Session): the events commit or roll back with it — call it
    last, just before commit, since the chain head stays locked until then. Outside one (a
    read Session, an autocommit connection): the events are committed, in one round trip,
    before this returns; ``durable=False`` then skips waiting for the WAL flush (an entry can
    be lost in a crash, never corrupted; docs/privacy.md, "Audit"). Any failure raises: a
    request whose audit cannot be written must fail. Many concurrent reads are cheaper
    through :class:`healthmesh.privacy.appender.AuditAppender` (one chain append a batch).
    """
    batch = [event] if isinstance(event, Mapping) else list(event)
    if not batch:
        return []
    return await append_prepared(
        target, prepare_events(batch), durable=durable, checkpoint_every=checkpoint_every
    )


async def append_prepared(
    target: Session | AsyncConnection[TupleRow],
    prepared: Prepared,
    *,
    durable: bool = True,
    checkpoint_every: int | None = None,
) -> list[int]:
    """:func:`record` for events already prepared (:func:`prepare_events`)."""
    if not len(prepared):
        return []
    conn = _conn(target)
    own = conn.info.transaction_status == pq.TransactionStatus.IDLE
    last, head = await audit_store.append(
        conn, prepared.tables, prepared.entries, begin=own, durable=durable
    )
    every = checkpoint_every or checkpoints.CHECKPOINT_EVERY
    first = last - len(prepared) + 1
    if last // every > (first - 1) // every:  # crossed a multiple of ``every``
        await _sign(conn, last, head, own)
    return list(range(first, last + 1))


async def _sign(conn: Conn, seq: int, head: bytes, own: bool) -> None:
    if not own:
        await checkpoints.sign_head(conn, seq, head, "periodic")
        return
    async with conn.transaction():
        await checkpoints.sign_head(conn, seq, head, "periodic")


async def checkpoint(target: Session | AsyncConnection[TupleRow]) -> int:
    """Sign the current head now (e.g. before a backup); its seq (0: empty chain)."""
    conn = _conn(target)
    async with conn.transaction():
        seq, hash = await audit_store.lock_head(conn)
        if seq:
            await checkpoints.sign_head(conn, seq, hash, "periodic")
        return seq


# --- verification ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Problem:
    seq: int | None  # the entry where the chain first goes wrong; None: not tied to one
    event_id: str | None
    what: str

    def __str__(self) -> str:
        where = f"entry {self.seq}" if self.seq is not None else "chain"
        of = f" (AuditEvent/{self.event_id})" if self.event_id else ""
        return f"{where}{of}: {self.what}"


@dataclass(slots=True)
class Report:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        tied = [p for p in self.problems if p.seq is not None]
        if tied:
            return min(tied, key=lambda p: p.seq or 0)
        return self.problems[0] if self.problems else None


def _row_problem(
    row: Sequence[Any], expected_seq: int, prev: bytes
) -> tuple[Problem | None, bytes]:
    """The first thing wrong with one entry (and its stored event), and its hash."""
    seq, event_id, _, event_hash, prev_hash, hash = row[:6]
    event_hash, prev_hash, hash = bytes(event_hash), bytes(prev_hash), bytes(hash)
    content, owner, deleted = row[15], row[16], row[17]

    def problem(what: str) -> tuple[Problem, bytes]:
        return Problem(seq, event_id, what), hash

    if seq != expected_seq:
        first = "entries" if seq - expected_seq > 1 else "entry"
        missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}–{seq - 1}"
        if seq < expected_seq:
            return Problem(seq, event_id, "out of order"), hash
        return Problem(expected_seq, None, f"{first} {missing} missing (next is {seq})"), hash
    if prev_hash != prev:
        return problem("does not follow its predecessor (prev_hash differs): reordered or replaced")
    if link_hash(seq, prev_hash, event_hash) != hash:
        return problem("its chain hash is wrong: the entry was edited")
    if content is None or deleted:
        return problem("its AuditEvent is missing from the resource table")
    stored = orjson.loads(content)
    if content_hash(stored) != event_hash:
        return problem("the AuditEvent was changed after it was recorded")
    fact = facts_of(stored)
    columns = (*row[6:14], tuple(row[14] or ()))
    if tuple(getattr(fact, f.name) for f in fields(Facts)) != columns:
        return problem("the entry's fact columns do not match its AuditEvent")
    if owner != fact.patient_id:
        return problem("the AuditEvent was moved to another patient's compartment")
    return None, hash


async def verify(conn: Conn) -> Report:
    """Walk the whole chain in one snapshot; every problem found, the first bad one first.

    Detects edited events and entries, deleted, inserted and reordered entries, events moved
    between compartments, AuditEvents that are not in the chain, forged or altered
    checkpoints, and a tail truncated below the newest checkpoint. A chain whose oldest
    entries were removed must start right after a valid purge checkpoint.
    """
    report = Report()
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        keys = await audit_store.public_keys(conn)
        marks = [checkpoints.check(*c, keys) for c in await audit_store.checkpoints(conn)]
        report.checkpoints = len(marks)
        for mark in marks:
            if not mark.valid:
                report.problems.append(Problem(mark.seq, None, f"checkpoint: {mark.reason}"))
        good = [m for m in marks if m.valid]
        purges = {m.seq: m for m in good if m.kind == "purge"}
        by_seq: dict[int, list[checkpoints.Checkpoint]] = {}
        for mark in good:
            by_seq.setdefault(mark.seq, []).append(mark)
        expected, prev = 1, GENESIS
        broken = False
        async for row in audit_store.chain_rows(conn):
            seq = int(row[0])
            if report.first_seq is None:
                report.first_seq = seq
                if seq > 1:
                    start = purges.get(seq - 1)
                    if start is None:
                        # Missing since the last legitimate purge (or since the start).
                        after = max((p for p in purges if p < seq), default=0)
                        report.problems.append(
                            Problem(
                                after + 1,
                                None,
                                f"entries {after + 1}–{seq - 1} missing (no purge checkpoint)",
                            )
                        )
                        broken = True
                    expected = seq
                    prev = start.hash if start is not None else bytes(row[4])
            report.entries += 1
            report.last_seq = seq
            if broken:
                continue  # after the first break, later entries cannot be judged
            problem, hash = _row_problem(row, expected, prev)
            if problem is not None:
                report.problems.append(problem)
                broken = True
                continue
            for mark in by_seq.get(seq, ()):
                if mark.hash != hash:
                    report.problems.append(
                        Problem(seq, row[1], f"differs from its signed {mark.kind} checkpoint")
                    )
                    broken = True
            expected, prev = seq + 1, hash
        last = report.last_seq or 0
        beyond = [m for m in good if m.seq > last]
        if beyond:
            top = max(m.seq for m in beyond)
            report.problems.append(
                Problem(last + 1, None, f"entries {last + 1}–{top} missing (signed at {top})")
            )
        head_seq, _ = await audit_store.head(conn)
        if head_seq != last:
            report.problems.append(
                Problem(None, None, f"the head says {head_seq} entries, the chain ends at {last}")
            )
        for id in await audit_store.unchained_events(conn):
            report.problems.append(Problem(None, id, "stored AuditEvent not in the chain"))
    return report
