"""Brute-force limits on the token endpoints: fixed-window counters in PostgreSQL.

Counting in the database makes the limit hold across every server process (and host) with
one statement per request: both buckets (client id, remote address) are bumped together.
"""

from __future__ import annotations

import math
import time

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.errors import RateLimited

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]

_BUMP = (
    "INSERT INTO auth_rate_counter AS c (bucket, window_start, window_end, hits)"
    " SELECT b, to_timestamp(%s), to_timestamp(%s), 1 FROM unnest(%s::text[]) AS b"
    " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = c.hits + 1"
    " RETURNING bucket, hits"
)


class RateLimiter:
    def __init__(self, pool: Pool, *, window: int, per_client: int, per_address: int) -> None:
        self.pool = pool
        self.window = window
        self.limits = {"client": per_client, "addr": per_address}

    async def hit(self, *, client_id: str | None, address: str | None) -> None:
        """Count one request; raise :class:`RateLimited` when a bucket is over its limit."""
        buckets = []
        if client_id:
            buckets.append(f"client:{client_id[:200]}")
        if address:
            buckets.append(f"addr:{address}")
        if not buckets:
            return
        now = time.time()
        start = math.floor(now / self.window) * self.window
        async with self.pool.connection() as conn:
            cur = await conn.execute(_BUMP, (start, start + self.window, buckets))
            rows = await cur.fetchall()
        if any(hits > self.limits[bucket.split(":", 1)[0]] for bucket, hits in rows):
            raise RateLimited(max(1, math.ceil(start + self.window - now)))

    async def purge(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM auth_rate_counter WHERE window_end < now()")
            return cur.rowcount
