"""Replay protection for JWTs that may be used once: client assertions and nested id_tokens.

``first_use`` inserts ``(issuer, jti)``; the primary key decides atomically, across any
number of server processes, which of several concurrent presentations is the first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

_CLAIM = (
    "INSERT INTO auth_seen_jti (issuer, jti, expires_at) VALUES (%s, %s, %s)"
    " ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at"
    " WHERE auth_seen_jti.expires_at < now()"  # an expired entry may be reused
    " RETURNING 1"
)


class ReplayGuard:
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]) -> None:
        self.pool = pool

    async def first_use(self, issuer: str, jti: str, expires_at: int) -> bool:
        """True the first time ``issuer``+``jti`` is presented before it expires, else False."""
        if not jti:
            return False
        until = datetime.fromtimestamp(expires_at, UTC)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CLAIM, (issuer, jti, until))
            return await cur.fetchone() is not None

    async def purge(self) -> int:
        """Forget entries whose JWTs have expired; returns how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM auth_seen_jti WHERE expires_at < now()")
            return cur.rowcount
