"""Retention: audit entries are kept 7 years (SPECS §2), then purged without breaking verify.

``purge`` removes the oldest run of entries recorded before the cutoff, in one transaction
holding the chain head: it first signs a ``purge`` checkpoint of the last entry it removes,
so the chain restarts there (verify accepts a chain whose first entry follows a valid purge
checkpoint, and nothing else), then records the purge itself as an AuditEvent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from healthmesh.privacy import chain, checkpoints
from healthmesh.privacy.audit import purge_event
from healthmesh.store import audit_store
from healthmesh.store.audit_store import Conn

DEFAULT_RETENTION = timedelta(days=2557)  # 7 years of 365.25 days


def retention_from_env() -> timedelta:
    """HEALTHMESH_AUDIT_RETENTION_DAYS, or the 7-year default."""
    days = os.environ.get("HEALTHMESH_AUDIT_RETENTION_DAYS")
    return timedelta(days=int(days)) if days else DEFAULT_RETENTION


@dataclass(frozen=True, slots=True)
class Purged:
    removed: int
    cutoff: datetime
    first: int | None = None
    last: int | None = None


async def purge(
    conn: Conn,
    *,
    retention: timedelta = DEFAULT_RETENTION,
    at: datetime | None = None,
    node: str = "healthmesh",
    batch: int = 10_000,
) -> Purged:
    """Remove entries recorded more than ``retention`` before ``at`` (default now), at most
    ``batch`` per transaction, so appends wait on the chain head for one batch at a time."""
    if retention <= timedelta(0):
        raise ValueError("retention must be positive")
    cutoff = (at or datetime.now(UTC)) - retention
    # Only what was there when the purge began: its own purge events are never purged by it.
    upto, _ = await audit_store.head(conn)
    removed, first, last = 0, None, None
    while True:
        done = await _purge_batch(conn, cutoff, upto, batch, node)
        if done is None:
            return Purged(removed, cutoff, first, last)
        removed += done[0]
        first = done[1] if first is None else first
        last = done[2]


async def _purge_batch(
    conn: Conn, cutoff: datetime, upto: int, batch: int, node: str
) -> tuple[int, int, int] | None:
    async with conn.transaction():
        head_seq, _ = await audit_store.lock_head(conn)
        bounds = await audit_store.purge_boundary(conn, cutoff, head_seq)
        if bounds is None or bounds[0] > upto:
            return None
        first, last = bounds[0], min(bounds[1], bounds[0] + batch - 1, upto)
        hash = await audit_store.entry_hash(conn, last)
        if hash is None:  # the run ends at an entry that is gone: let verify say what broke
            raise RuntimeError(f"audit entry {last} is missing; run healthmesh audit verify")
        stamp = cutoff.isoformat(timespec="seconds")
        await checkpoints.sign_head(conn, last, hash, "purge", first=first, cutoff=stamp)
        removed = await audit_store.delete_through(conn, last)
        await chain.record(
            conn, purge_event(first=first, last=last, removed=removed, cutoff=stamp, node=node)
        )
    return removed, first, last
