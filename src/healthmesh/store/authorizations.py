"""SQL for the authorization-code flow: pending authorizations, codes and launch contexts.

Tables from migration 0009. Every step of a browser's flow reads and writes here, so any
server process can serve the next request. Secrets (codes, cookies, CSRF tokens, launch ids)
arrive already hashed: this module never sees one in the clear except the IdP PKCE verifier,
which must be sent back to the identity provider and dies with the pending row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    """An authorization request waiting for the user's login and consent."""

    id: str
    browser_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str
    nonce: str | None
    launch_patient: str | None
    expires_at: int
    stage: str = "login"
    idp_state_hash: str | None = None
    idp_nonce: str | None = None
    idp_verifier: str | None = None
    patient: str | None = None
    fhir_user: str | None = None
    csrf_hash: str | None = None


_PENDING_COLUMNS = (
    "id, browser_hash, client_id, redirect_uri, scope, state, code_challenge, nonce,"
    " launch_patient, extract(epoch FROM expires_at)::bigint, stage, idp_state_hash, idp_nonce,"
    " idp_verifier, patient, fhir_user, csrf_hash"
)

# Built once from constants; no value ever reaches SQL text (ruff S608 cannot see that).
_SELECT_PENDING = (
    f"SELECT {_PENDING_COLUMNS} FROM auth_pending"  # noqa: S608
    " WHERE id = %s AND expires_at > now()"
)
_TAKE_LOGIN = (
    "UPDATE auth_pending SET idp_state_hash = NULL"  # noqa: S608
    " WHERE idp_state_hash = %s AND stage = 'login' AND expires_at > now()"
    f" RETURNING {_PENDING_COLUMNS}"
)
_SHOW_CONSENT = (
    "UPDATE auth_pending SET csrf_hash = %s"  # noqa: S608
    " WHERE id = %s AND browser_hash = %s AND stage = 'consent' AND expires_at > now()"
    f" RETURNING {_PENDING_COLUMNS}"
)
_TAKE_DECISION = (
    "DELETE FROM auth_pending WHERE id = %s AND browser_hash = %s AND csrf_hash = %s"  # noqa: S608
    f" AND stage = 'consent' AND expires_at > now() RETURNING {_PENDING_COLUMNS}"
)


def _pending(row: TupleRow) -> Pending:
    return Pending(
        id=row[0],
        browser_hash=row[1],
        client_id=row[2],
        redirect_uri=row[3],
        scope=row[4],
        state=row[5],
        code_challenge=row[6],
        nonce=row[7],
        launch_patient=row[8],
        expires_at=int(row[9]),
        stage=row[10],
        idp_state_hash=row[11],
        idp_nonce=row[12],
        idp_verifier=row[13],
        patient=row[14],
        fhir_user=row[15],
        csrf_hash=row[16],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeRecord:
    """What an authorization code stands for (RFC 6749 §4.1.2; RFC 7636 §4.4)."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    patient: str | None
    fhir_user: str | None
    nonce: str | None
    expires_at: int


class Redemption(Enum):
    FIRST = "first"  # this call redeemed the code: issue tokens
    REUSED = "reused"  # redeemed before: refuse, and revoke what the first redemption issued
    UNKNOWN = "unknown"  # never issued, expired unused, or purged


@dataclass(frozen=True, slots=True)
class Redeemed:
    outcome: Redemption
    record: CodeRecord | None = None  # set for FIRST
    grant_id: str | None = None  # set for REUSED once the first redemption recorded its grant


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


_REDEEM = (
    "UPDATE auth_code SET used_at = now()"
    " WHERE code_hash = %s AND used_at IS NULL AND expires_at > now()"
    " RETURNING client_id, redirect_uri, code_challenge, scope, patient, fhir_user, nonce,"
    " extract(epoch FROM expires_at)::bigint"
)
# A second redemption marks the row; the first one, when it records its grant, sees the mark.
_MARK_REUSE = (
    "UPDATE auth_code SET reused_at = coalesce(reused_at, now())"
    " WHERE code_hash = %s AND used_at IS NOT NULL RETURNING grant_id"
)
_RECORD_GRANT = (
    "UPDATE auth_code SET grant_id = %s WHERE code_hash = %s RETURNING reused_at IS NOT NULL"
)


class AuthorizationStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # -- pending authorizations --------------------------------------------------------------

    async def create_pending(self, p: Pending) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth_pending (id, browser_hash, client_id, redirect_uri, scope,"
                " state, code_challenge, nonce, launch_patient, idp_state_hash, idp_nonce,"
                " idp_verifier, stage, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    p.id,
                    p.browser_hash,
                    p.client_id,
                    p.redirect_uri,
                    p.scope,
                    p.state,
                    p.code_challenge,
                    p.nonce,
                    p.launch_patient,
                    p.idp_state_hash,
                    p.idp_nonce,
                    p.idp_verifier,
                    p.stage,
                    _at(p.expires_at),
                ),
            )

    async def pending(self, id: str) -> Pending | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _SELECT_PENDING,
                (id,),
            )
            row = await cur.fetchone()
        return None if row is None else _pending(row)

    async def take_login(self, idp_state_hash: str) -> Pending | None:
        """The pending authorization a callback's state names, once: the state is cleared."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _TAKE_LOGIN,
                (idp_state_hash,),
            )
            row = await cur.fetchone()
        return None if row is None else _pending(row)

    async def logged_in(self, id: str, *, patient: str, fhir_user: str) -> bool:
        """Record who logged in; the flow moves on to consent (the IdP secrets are dropped)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE auth_pending SET stage = 'consent', patient = %s, fhir_user = %s,"
                " idp_nonce = NULL, idp_verifier = NULL"
                " WHERE id = %s AND stage = 'login' AND expires_at > now()",
                (patient, fhir_user, id),
            )
            return cur.rowcount == 1

    async def show_consent(self, id: str, browser_hash: str, csrf_hash: str) -> Pending | None:
        """The pending authorization to show this browser, with a fresh CSRF token for its form.

        Each showing replaces the token: only the form last shown can decide.
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SHOW_CONSENT, (csrf_hash, id, browser_hash))
            row = await cur.fetchone()
        return None if row is None else _pending(row)

    async def take_decision(self, id: str, browser_hash: str, csrf_hash: str) -> Pending | None:
        """Remove and return the pending authorization a consent form decides, once.

        Removing it makes the decision single: a replayed form finds nothing.
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _TAKE_DECISION,
                (id, browser_hash, csrf_hash),
            )
            row = await cur.fetchone()
        return None if row is None else _pending(row)

    async def drop_pending(self, id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM auth_pending WHERE id = %s", (id,))

    # -- codes ---------------------------------------------------------------------------------

    async def insert_code(self, code_hash: str, c: CodeRecord) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth_code (code_hash, client_id, redirect_uri, code_challenge,"
                " scope, patient, fhir_user, nonce, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    code_hash,
                    c.client_id,
                    c.redirect_uri,
                    c.code_challenge,
                    c.scope,
                    c.patient,
                    c.fhir_user,
                    c.nonce,
                    _at(c.expires_at),
                ),
            )

    async def redeem(self, code_hash: str) -> Redeemed:
        """Mark a code used; exactly one of any number of concurrent calls gets FIRST."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_REDEEM, (code_hash,))
            row = await cur.fetchone()
            if row is not None:
                record = CodeRecord(
                    client_id=row[0],
                    redirect_uri=row[1],
                    code_challenge=row[2],
                    scope=row[3],
                    patient=row[4],
                    fhir_user=row[5],
                    nonce=row[6],
                    expires_at=int(row[7]),
                )
                return Redeemed(Redemption.FIRST, record)
            cur = await conn.execute(_MARK_REUSE, (code_hash,))
            reused = await cur.fetchone()
        if reused is None:
            return Redeemed(Redemption.UNKNOWN)
        return Redeemed(Redemption.REUSED, grant_id=reused[0])

    async def record_grant(self, code_hash: str, grant_id: str) -> bool:
        """Name the grant issued from a redeemed code; True when a reuse was seen meanwhile."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_RECORD_GRANT, (grant_id, code_hash))
            row = await cur.fetchone()
        return bool(row and row[0])

    # -- launch contexts -----------------------------------------------------------------------

    async def create_launch(
        self, id_hash: str, *, patient: str, issued_by: str, expires_at: int
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO auth_launch (id_hash, patient, issued_by, expires_at)"
                " VALUES (%s, %s, %s, %s)",
                (id_hash, patient, issued_by, _at(expires_at)),
            )

    async def launch_patient(self, id_hash: str) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT patient FROM auth_launch WHERE id_hash = %s AND expires_at > now()",
                (id_hash,),
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # -- housekeeping --------------------------------------------------------------------------

    async def purge(self) -> int:
        """Forget expired pending requests and launches, and codes a day past expiry.

        Used codes are kept a while after they expire so that a late replay is still
        recognised as reuse (and revokes) rather than as an unknown code.
        """
        async with self.pool.connection() as conn:
            total = 0
            for statement in (
                "DELETE FROM auth_pending WHERE expires_at < now()",
                "DELETE FROM auth_launch WHERE expires_at < now()",
                "DELETE FROM auth_code WHERE expires_at < now() - interval '1 day'",
            ):
                cur = await conn.execute(statement.encode())
                total += cur.rowcount
            return total
