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
) -> Purged:
    """Remove entries recorded more than ``retention`` before ``at`` (default now)."""
    if retention <= timedelta(0):
        raise ValueError("retention must be positive")
    cutoff = (at or datetime.now(UTC)) - retention
    async with conn.transaction():
        head_seq, _ = await audit_store.lock_head(conn)
        bounds = await audit_store.purge_boundary(conn, cutoff, head_seq)
        if bounds is None:
            return Purged(0, cutoff)
        first, last = bounds
        hash = await audit_store.entry_hash(conn, last)
        if hash is None:  # the run ends at an entry that is gone: let verify say what broke
            raise RuntimeError(f"audit entry {last} is missing; run healthmesh audit verify")
        stamp = cutoff.isoformat(timespec="seconds")
        await checkpoints.sign_head(conn, last, hash, "purge", first=first, cutoff=stamp)
        removed = await audit_store.delete_through(conn, last)
        await chain.record(
            conn, purge_event(first=first, last=last, removed=removed, cutoff=stamp, node=node)
        )
    return Purged(removed, cutoff, first, last)
