"""Every SQL statement of the test identity provider (auth/identity/test_idp; tables of
migration 0008)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRow:
    username: str
    patient_id: str
    subject: str
    password_hash: str
    totp_secret: str
    last_totp_step: int
    claims: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeRow:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    username: str
    auth_time: datetime


def code_hash(code: str) -> bytes:
    return hashlib.sha256(code.encode()).digest()


_ACCOUNT = (
    "SELECT username, patient_id, subject, password_hash, totp_secret, last_totp_step, claims"
    " FROM idp_account"
)


def _account(row: tuple[Any, ...] | None) -> AccountRow | None:
    if row is None:
        return None
    return AccountRow(
        username=row[0],
        patient_id=row[1],
        subject=row[2],
        password_hash=row[3],
        totp_secret=row[4],
        last_totp_step=row[5],
        claims=row[6],
    )


class IdpStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # --- seed and keys --------------------------------------------------------------------
    async def seed(self) -> bytes:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO idp_seed (id, seed) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                (secrets.token_bytes(32),),
            )
            cur = await conn.execute("SELECT seed FROM idp_seed WHERE id = 1")
            row = await cur.fetchone()
        assert row is not None
        return bytes(row[0])

    async def signing_keys(self) -> list[tuple[str, str, str]]:
        """(kid, alg, private JWK JSON) of unretired keys, newest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT kid, alg, private_jwk FROM idp_signing_key WHERE retired_at IS NULL"
                " ORDER BY created_at DESC, kid"
            )
            return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def add_signing_key_once(self, kid: str, alg: str, private_jwk: str) -> None:
        """Insert a first key unless another process already did (advisory lock decides)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('idp_signing_key'))")
            cur = await conn.execute(
                "SELECT 1 FROM idp_signing_key WHERE retired_at IS NULL LIMIT 1"
            )
            if await cur.fetchone() is None:
                await conn.execute(
                    "INSERT INTO idp_signing_key (kid, alg, private_jwk) VALUES (%s, %s, %s)",
                    (kid, alg, private_jwk),
                )

    # --- accounts -------------------------------------------------------------------------
    async def account(self, username: str) -> AccountRow | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"{_ACCOUNT} WHERE username = %s", (username,))
            return _account(await cur.fetchone())

    async def account_of_patient(self, patient_id: str) -> AccountRow | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"{_ACCOUNT} WHERE patient_id = %s", (patient_id,))
            return _account(await cur.fetchone())

    async def accounts(self, limit: int) -> list[AccountRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"{_ACCOUNT} ORDER BY username LIMIT %s", (limit,))
            return [a for a in map(_account, await cur.fetchall()) if a is not None]

    async def usernames(self) -> set[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT username FROM idp_account")
            return {r[0] for r in await cur.fetchall()}

    async def upsert_account(self, account: AccountRow) -> None:
        """Create, or refresh the claims of, the account of ``account.patient_id``."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO idp_account (username, patient_id, subject, password_hash,"
                " totp_secret, claims) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (patient_id) DO UPDATE SET claims = EXCLUDED.claims",
                (
                    account.username,
                    account.patient_id,
                    account.subject,
                    account.password_hash,
                    account.totp_secret,
                    account.claims,
                ),
            )

    async def use_totp_step(self, username: str, step: int) -> bool:
        """Record that the TOTP code of ``step`` was used; False if it (or a later one) was."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE idp_account SET last_totp_step = %s"
                " WHERE username = %s AND last_totp_step < %s RETURNING 1",
                (step, username, step),
            )
            return await cur.fetchone() is not None

    # --- clients --------------------------------------------------------------------------
    async def client(self, client_id: str) -> tuple[str | None, list[str]] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT secret_hash, redirect_uris FROM idp_client WHERE client_id = %s",
                (client_id,),
            )
            row = await cur.fetchone()
        return None if row is None else (row[0], list(row[1]))

    async def put_client(
        self, client_id: str, secret_hash: str | None, redirect_uris: list[str]
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO idp_client (client_id, secret_hash, redirect_uris)"
                " VALUES (%s, %s, %s) ON CONFLICT (client_id) DO UPDATE"
                " SET secret_hash = EXCLUDED.secret_hash, redirect_uris = EXCLUDED.redirect_uris",
                (client_id, secret_hash, redirect_uris),
            )

    # --- authorization codes --------------------------------------------------------------
    async def add_code(self, code: str, row: CodeRow, lifetime: timedelta) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO idp_authorization_code (code_hash, client_id, redirect_uri,"
                " code_challenge, nonce, scope, username, auth_time, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s)",
                (
                    code_hash(code),
                    row.client_id,
                    row.redirect_uri,
                    row.code_challenge,
                    row.nonce,
                    row.scope,
                    row.username,
                    row.auth_time,
                    lifetime,
                ),
            )

    async def take_code(self, code: str) -> CodeRow | None:
        """The code's grant, marking it used; None when unknown, expired or used before
        (a second use is also how RFC 6749 §4.1.2 says to spot a stolen code)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE idp_authorization_code SET used_at = now()"
                " WHERE code_hash = %s AND used_at IS NULL AND expires_at > now()"
                " RETURNING client_id, redirect_uri, code_challenge, nonce, scope, username,"
                " auth_time",
                (code_hash(code),),
            )
            row = await cur.fetchone()
            await conn.execute(
                "DELETE FROM idp_authorization_code WHERE expires_at < now() - interval '1 hour'"
            )
        if row is None:
            return None
        return CodeRow(
            client_id=row[0],
            redirect_uri=row[1],
            code_challenge=row[2],
            nonce=row[3],
            scope=row[4],
            username=row[5],
            auth_time=row[6].astimezone(UTC),
        )

    # --- login failures -------------------------------------------------------------------
    async def failures(self, buckets: list[str], window: timedelta) -> list[tuple[str, int, float]]:
        """(bucket, failures in window, seconds since the oldest of them) per bucket."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT bucket, count(*), extract(epoch FROM now() - min(failed_at))::float8"
                " FROM idp_login_failure WHERE bucket = ANY(%s) AND failed_at > now() - %s"
                " GROUP BY bucket",
                (buckets, window),
            )
            return [(r[0], int(r[1]), float(r[2])) for r in await cur.fetchall()]

    async def add_failure(self, buckets: list[str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO idp_login_failure (bucket) SELECT unnest(%s::text[])", (buckets,)
            )
            await conn.execute(
                "DELETE FROM idp_login_failure WHERE failed_at < now() - interval '1 day'"
            )

    async def clear_failures(self, bucket: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM idp_login_failure WHERE bucket = %s", (bucket,))
