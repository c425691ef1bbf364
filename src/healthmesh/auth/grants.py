"""Authorizations and their refresh tokens (RFC 6749 §6, OAuth 2.0 Security BCP §4.14).

A grant is one authorization of one client: its scope, its context (patient, fhirUser,
organization, purpose of use) and its window. Every access token carries its grant id, so
revoking the grant revokes every token it produced. Refresh tokens are random strings whose
SHA-256 digest alone is stored; each use rotates them (the old one dies, a successor is
issued in the same grant) and a second use of a dead one revokes the whole grant — the
"family" — since it means two parties hold it (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.errors import OAuthError
from healthmesh.auth.scope_sets import not_covered, parse_scope

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]

_RETURNING = (
    " RETURNING g.grant_id, g.client_id, g.kind, g.subject, g.scope, g.patient, g.fhir_user,"
    " g.organization, g.purpose_of_use, g.created_at, g.expires_at, g.revoked_at"
)
_SELECT_GRANT = (
    "SELECT g.grant_id, g.client_id, g.kind, g.subject, g.scope, g.patient, g.fhir_user,"
    " g.organization, g.purpose_of_use, g.created_at, g.expires_at, g.revoked_at"
    " FROM auth_grant g WHERE g.grant_id = %s"
)
_SELECT_REFRESH = (
    "SELECT g.grant_id, g.client_id, g.kind, g.subject, g.scope, g.patient, g.fhir_user,"
    " g.organization, g.purpose_of_use, g.created_at, g.expires_at, g.revoked_at,"
    " r.used_at IS NULL FROM auth_refresh_token r JOIN auth_grant g USING (grant_id)"
    " WHERE r.digest = %s"
)
_INSERT_GRANT = (
    "INSERT INTO auth_grant AS g (grant_id, client_id, kind, subject, scope, patient,"
    " fhir_user, organization, purpose_of_use, expires_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + %s)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    grant_id: str
    client_id: str
    kind: str
    subject: str
    scope: str
    patient: str | None = None
    fhir_user: str | None = None
    organization: str | None = None
    purpose_of_use: str | None = None
    created_at: datetime
    expires_at: datetime
    revoked: bool = False

    @property
    def live(self) -> bool:
        return not self.revoked and self.expires_at > datetime.now(UTC)


def _grant(row: tuple[object, ...]) -> Grant:
    return Grant(
        grant_id=str(row[0]),
        client_id=str(row[1]),
        kind=str(row[2]),
        subject=str(row[3]),
        scope=str(row[4]),
        patient=row[5],  # type: ignore[arg-type]
        fhir_user=row[6],  # type: ignore[arg-type]
        organization=row[7],  # type: ignore[arg-type]
        purpose_of_use=row[8],  # type: ignore[arg-type]
        created_at=row[9],  # type: ignore[arg-type]
        expires_at=row[10],  # type: ignore[arg-type]
        revoked=row[11] is not None,
    )


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Refreshed:
    grant: Grant
    scope: str  # the scope of the new access token (⊆ the grant's)
    refresh_token: str  # the successor


class GrantStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def create(
        self,
        *,
        client_id: str,
        kind: str,
        scope: str,
        lifetime: timedelta,
        subject: str | None = None,
        patient: str | None = None,
        fhir_user: str | None = None,
        organization: str | None = None,
        purpose_of_use: str | None = None,
    ) -> Grant:
        """Record an authorization. ``lifetime`` is its window: the refresh window (90 days)
        for grants with refresh tokens, the access token's lifetime otherwise."""
        grant_id = secrets.token_urlsafe(16)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _INSERT_GRANT + _RETURNING,
                (
                    grant_id,
                    client_id,
                    kind,
                    subject or client_id,
                    scope,
                    patient,
                    fhir_user,
                    organization,
                    purpose_of_use,
                    lifetime,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return _grant(row)

    async def get(self, grant_id: str) -> Grant | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SELECT_GRANT, (grant_id,))
            row = await cur.fetchone()
        return None if row is None else _grant(row)

    async def issue_refresh_token(self, grant_id: str) -> str:
        """A new refresh token in this grant (the first one; ``refresh`` issues successors)."""
        token = secrets.token_urlsafe(32)
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth_refresh_token (digest, grant_id) VALUES (%s, %s)",
                (digest(token), grant_id),
            )
        return token

    async def find_refresh_token(self, token: str) -> tuple[Grant, bool] | None:
        """The grant of a refresh token and whether that token is still unused."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _SELECT_REFRESH,
                (digest(token),),
            )
            row = await cur.fetchone()
        return None if row is None else (_grant(row), bool(row[12]))

    async def refresh(self, token: str, *, client_id: str, scope: str | None) -> Refreshed:
        """Use a refresh token once: check it, kill it, issue its successor (RFC 6749 §6).

        Refuses with invalid_grant when the token is unknown, dead, of a revoked or expired
        grant, or issued to another client; with invalid_scope when ``scope`` asks for more
        than was granted. Presenting a dead token revokes the whole grant (reuse detection).
        """
        reused = False
        async with self.pool.connection() as conn, conn.transaction():
            # FOR UPDATE: of two concurrent uses of one token, the second waits, then sees
            # it used (and is treated as reuse), so a token never has two successors.
            cur = await conn.execute(
                _SELECT_REFRESH + " FOR UPDATE OF r",
                (digest(token),),
            )
            row = await cur.fetchone()
            if row is None:
                raise OAuthError("invalid_grant", "the refresh token is not valid")
            grant = _grant(row)
            if grant.client_id != client_id:
                # Another client's token: refuse, and say no more than for an unknown one.
                raise OAuthError("invalid_grant", "the refresh token is not valid")
            if not row[12]:
                reused = True
                await conn.execute(
                    "UPDATE auth_grant SET revoked_at = now()"
                    " WHERE grant_id = %s AND revoked_at IS NULL",
                    (grant.grant_id,),
                )
            elif not grant.live:
                raise OAuthError("invalid_grant", "the authorization has expired or was revoked")
            else:
                granted = scope_or(grant.scope, scope)
                successor = secrets.token_urlsafe(32)
                await conn.execute(
                    "UPDATE auth_refresh_token SET used_at = now() WHERE digest = %s",
                    (digest(token),),
                )
                await conn.execute(
                    "INSERT INTO auth_refresh_token (digest, grant_id) VALUES (%s, %s)",
                    (digest(successor), grant.grant_id),
                )
        if reused:
            raise OAuthError(
                "invalid_grant",
                "the refresh token was already used; the authorization has been revoked",
            )
        return Refreshed(grant, granted, successor)

    async def revoke(self, grant_id: str) -> None:
        """Revoke an authorization: its refresh tokens and every access token it produced."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE auth_grant SET revoked_at = now() WHERE grant_id = %s"
                " AND revoked_at IS NULL",
                (grant_id,),
            )

    async def revoke_access_token(self, jti: str, expires_at: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth_revoked_token (jti, expires_at) VALUES (%s, %s)"
                " ON CONFLICT (jti) DO NOTHING",
                (jti, datetime.fromtimestamp(expires_at, UTC)),
            )

    async def purge(self) -> int:
        """Forget revocations of access tokens that have expired anyway."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM auth_revoked_token WHERE expires_at < now()")
            return cur.rowcount


def scope_or(granted: str, requested: str | None) -> str:
    """The scope of a refreshed token: as requested if ⊆ granted (RFC 6749 §6), else error."""
    if requested is None or not requested.strip():
        return granted
    extra = not_covered(granted, requested)
    if extra:
        raise OAuthError("invalid_scope", f"not granted, so not refreshable: {' '.join(extra)}")
    return " ".join(parse_scope(requested))
