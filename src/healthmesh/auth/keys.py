"""The server's token-signing keys: RSA 2048 / RS256 in PostgreSQL, published as a JWKS.

Lifecycle (docs/security.md): the first start creates a key; ``rotate`` makes a new key
active and retires the old one, which stays published (and accepted) until every token it
signed has expired: ``publish_until = retired_at + longest token lifetime + leeway``. The
kid is the RFC 7638 thumbprint of the public key, so it names the key material itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import RSAKey
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.settings import MAX_ACCESS_TOKEN_LIFETIME
from healthmesh.store.key_sealing import active_private_key, seal

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
ALGORITHM = "RS256"
_LOCK = 0x4854_4B45_5953  # advisory lock: one process creates / rotates keys at a time
_STALE_AFTER = 300.0  # seconds: the cached set is reloaded anyway (retirements elsewhere)
_UNKNOWN_FOR = 5.0  # seconds a kid found nowhere is not looked up again
_UNKNOWN_MAX = 1024

_PUBLISHED = (
    "SELECT kid, public_jwk, extract(epoch FROM publish_until)::bigint FROM auth_signing_key"
    " WHERE publish_until IS NULL OR publish_until > now() ORDER BY created_at DESC"
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    key: RSAKey
    publish_until: int | None  # epoch seconds; None while the key is active


def new_key() -> tuple[str, RSAKey]:
    key = RSAKey.generate_key(2048, private=True)
    return key.thumbprint(), key


def public_jwk(kid: str, key: RSAKey) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": kid, "use": "sig", "alg": ALGORITHM}


class SigningKeys:
    def __init__(self, pool: Pool, *, leeway: int = 30) -> None:
        self.pool = pool
        # A retired key must verify the last tokens it signed: the longest lifetime + leeway.
        self.retire_margin = MAX_ACCESS_TOKEN_LIFETIME + 2 * leeway
        self._private: dict[str, RSAKey] = {}
        self._public: dict[str, PublicKey] = {}
        self._loaded_at = float("-inf")
        self._unknown: dict[str, float] = {}  # kid -> monotonic time it was not found

    async def ensure_active(self) -> str:
        """The active kid, creating the first key when there is none (on start-up)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            cur = await conn.execute(
                "SELECT kid FROM auth_signing_key WHERE retired_at IS NULL"
                " ORDER BY created_at DESC LIMIT 1"
            )
            row = await cur.fetchone()
            if row is not None:
                return str(row[0])
            return await self._insert(conn)

    async def rotate(self) -> str:
        """Make a new key active; retire the others; forget keys whose tokens all expired."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            kid = await self._insert(conn)
            await conn.execute(
                "UPDATE auth_signing_key SET retired_at = now(),"
                " publish_until = now() + make_interval(secs => %s)"
                " WHERE retired_at IS NULL AND kid <> %s",
                (self.retire_margin, kid),
            )
            await conn.execute("DELETE FROM auth_signing_key WHERE publish_until < now()")
        self._loaded_at = float("-inf")
        return kid

    async def _insert(self, conn: AsyncConnection[TupleRow]) -> str:
        kid, key = new_key()
        await conn.execute(
            "INSERT INTO auth_signing_key (kid, private_pem, public_jwk) VALUES (%s, %s, %s)",
            (kid, seal(key.as_pem(private=True).decode()), Jsonb(public_jwk(kid, key))),
        )
        self._private[kid] = key
        return kid

    async def signing_key(self) -> tuple[str, RSAKey]:
        """The active key. Read on every issuance (cheap), so that a rotation done by another
        process is followed at once and no process keeps signing with a retired key."""
        async with self.pool.connection() as conn:
            found = await active_private_key(
                conn, "auth_signing_key", self._private, RSAKey.import_key
            )
        if found is None:
            raise RuntimeError("no active signing key: SigningKeys.ensure_active() was not run")
        return found

    async def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWKS document: the active key and every retired key still in use."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PUBLISHED)
            rows = await cur.fetchall()
        return {"keys": [dict(row[1]) for row in rows]}

    async def verification_key(self, kid: str) -> RSAKey | None:
        """The published key with this kid, or None. Cached in memory; a kid not cached (a
        rotation in another process) is looked up by primary key, and a kid found nowhere is
        remembered for a few seconds, so a stream of bogus kids costs no more than one cheap
        query each."""
        now = time.monotonic()
        if now - self._loaded_at >= _STALE_AFTER:
            await self.reload()
        found = self._public.get(kid)
        if found is None:
            if now - self._unknown.get(kid, float("-inf")) < _UNKNOWN_FOR:
                return None
            found = await self._lookup(kid)
            if found is None:
                if len(self._unknown) >= _UNKNOWN_MAX:
                    self._unknown.clear()
                self._unknown[kid] = now
                return None
            self._public[kid] = found
        if found.publish_until is not None and found.publish_until <= time.time():
            return None  # retired and past the last expiry of anything it signed
        return found.key

    async def _lookup(self, kid: str) -> PublicKey | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT public_jwk, extract(epoch FROM publish_until)::bigint"
                " FROM auth_signing_key WHERE kid = %s"
                " AND (publish_until IS NULL OR publish_until > now())",
                (kid,),
            )
            row = await cur.fetchone()
        return None if row is None else PublicKey(RSAKey.import_key(dict(row[0])), row[1])

    async def reload(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PUBLISHED)
            rows = await cur.fetchall()
        self._public = {
            str(kid): PublicKey(RSAKey.import_key(dict(jwk)), until) for kid, jwk, until in rows
        }
        self._loaded_at = time.monotonic()
