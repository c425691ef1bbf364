"""Registered clients (table auth_client) and their public keys (inline JWKS or jwks_uri).

Two kinds (SMART App Launch 2.2 §"Client types"): public clients (``none``: a browser or
phone app that cannot keep a secret; PKCE protects its codes) and confidential asymmetric
clients (``private_key_jwt``: they prove themselves with a JWT signed by a key whose public
half they registered). There are no shared client secrets at all.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
log = logging.getLogger(__name__)

AUTH_METHODS = ("none", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def valid_client_id(value: str) -> bool:
    """Client ids are URL-safe and short: anything else is no client, and never reaches SQL."""
    return _CLIENT_ID.fullmatch(value) is not None


_INSERT = (
    "INSERT INTO auth_client (client_id, name, confidential, redirect_uris,"
    " token_endpoint_auth_method, jwks, jwks_uri, scope, grant_types, disabled, software_id,"
    " organization_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (client_id) DO NOTHING RETURNING client_id"
)
_SELECT = (
    "SELECT client_id, name, confidential, redirect_uris, token_endpoint_auth_method, jwks,"
    " jwks_uri, scope, grant_types, disabled, software_id, organization_id FROM auth_client"
)


class ClientError(ValueError):
    """Client metadata that cannot be registered (RFC 7591 §3.2.2 invalid_client_metadata)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    client_id: str
    name: str
    token_endpoint_auth_method: str = "none"  # noqa: S105 (a method name)
    redirect_uris: tuple[str, ...] = ()
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    scope: str = ""  # space-separated scopes it may be granted (wildcards allowed)
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    disabled: bool = False
    software_id: str | None = None
    organization_id: str | None = None

    @property
    def confidential(self) -> bool:
        return self.token_endpoint_auth_method == "private_key_jwt"  # noqa: S105

    def check(self) -> None:
        """Refuse inconsistent metadata before it reaches the database."""
        if not valid_client_id(self.client_id):
            raise ClientError("client_id must be 1-128 URL-safe characters")
        if not self.name.strip():
            raise ClientError("a client needs a name")
        if self.token_endpoint_auth_method not in AUTH_METHODS:
            raise ClientError(f"token_endpoint_auth_method must be one of {AUTH_METHODS}")
        bad = [g for g in self.grant_types if g not in GRANT_TYPES]
        if bad:
            raise ClientError(f"unsupported grant_types: {bad}")
        if self.confidential:
            if (self.jwks is None) == (self.jwks_uri is None):
                raise ClientError("private_key_jwt clients register exactly one of jwks, jwks_uri")
            if self.jwks is not None:
                parse_jwks(self.jwks)  # raises ClientError
            if self.jwks_uri is not None and not self.jwks_uri.startswith(
                ("https://", "http://127.0.0.1", "http://localhost")
            ):
                raise ClientError("jwks_uri must be https")
        else:
            if self.jwks is not None or self.jwks_uri is not None:
                raise ClientError("public clients have no keys (use private_key_jwt)")
            if "client_credentials" in self.grant_types:
                raise ClientError("client_credentials needs a confidential client")
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ClientError("authorization_code clients need at least one redirect_uri")


def parse_jwks(jwks: dict[str, Any]) -> dict[str, RSAKey | ECKey]:
    """The signing keys of a JWKS by kid; keys without kid cannot be chosen, so are refused."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ClientError("jwks must be an object with a non-empty keys array")
    found: dict[str, RSAKey | ECKey] = {}
    for entry in keys:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            raise ClientError("every key in jwks needs a kid")
        if "d" in entry:
            raise ClientError("jwks must hold public keys only")
        try:
            key = KeySet.import_key_set({"keys": [entry]}).keys[0]
        except (JoseError, ValueError, TypeError) as exc:
            raise ClientError(f"key {entry['kid']!r} is not a valid JWK: {exc}") from None
        if isinstance(key, RSAKey | ECKey):
            found[entry["kid"]] = key
    return found


def _client(row: tuple[Any, ...]) -> Client:
    return Client(
        client_id=row[0],
        name=row[1],
        redirect_uris=tuple(row[3]),
        token_endpoint_auth_method=row[4],
        jwks=row[5],
        jwks_uri=row[6],
        scope=row[7],
        grant_types=tuple(row[8]),
        disabled=row[9],
        software_id=row[10],
        organization_id=row[11],
    )


def new_client_id() -> str:
    # Never starting with "-" or "_": an id that looks like a command-line option breaks
    # `healthmesh clients disable ID` and scripts that pass it along.
    return "c" + secrets.token_urlsafe(16)


class ClientStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def add(self, client: Client) -> Client:
        client.check()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _INSERT,
                (
                    client.client_id,
                    client.name,
                    client.confidential,
                    list(client.redirect_uris),
                    client.token_endpoint_auth_method,
                    None if client.jwks is None else Jsonb(client.jwks),
                    client.jwks_uri,
                    client.scope,
                    list(client.grant_types),
                    client.disabled,
                    client.software_id,
                    client.organization_id,
                ),
            )
            if await cur.fetchone() is None:
                raise ClientError(f"client_id {client.client_id!r} is already registered")
        return client

    async def get(self, client_id: str) -> Client | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SELECT + " WHERE client_id = %s", (client_id,))
            row = await cur.fetchone()
        return None if row is None else _client(row)

    async def list(self) -> list[Client]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SELECT + " ORDER BY created_at")
            return [_client(row) for row in await cur.fetchall()]

    async def set_disabled(self, client_id: str, disabled: bool = True) -> bool:
        """Disable (or enable) a client; its live tokens stop working at once (the verifier
        checks the client with the grant). False when there is no such client."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE auth_client SET disabled = %s WHERE client_id = %s", (disabled, client_id)
            )
            return cur.rowcount == 1


@dataclass(slots=True)
class _Fetched:
    keys: dict[str, RSAKey | ECKey] = field(default_factory=dict)
    fetched_at: float = float("-inf")


class ClientKeys:
    """A client's public key by kid: from its inline JWKS, or from its jwks_uri over HTTPS.

    A fetched JWKS is cached for ``cache_seconds``; an unknown kid (the client rotated) makes
    one refetch, at most every ``refetch_interval`` seconds per URI, so a stream of bogus kids
    cannot turn the server into a request amplifier against the client's host.
    """

    def __init__(
        self,
        *,
        cache_seconds: int = 300,
        refetch_interval: int = 30,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.cache_seconds = cache_seconds
        self.refetch_interval = refetch_interval
        self.http = http or httpx.AsyncClient(timeout=5.0, follow_redirects=False)
        self._cache: dict[str, _Fetched] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def key_for(self, client: Client, kid: str) -> RSAKey | ECKey | None:
        if client.jwks is not None:
            try:
                return parse_jwks(client.jwks).get(kid)
            except ClientError:
                return None
        if client.jwks_uri is None:
            return None
        entry = self._cache.setdefault(client.jwks_uri, _Fetched())
        age = time.monotonic() - entry.fetched_at
        if age >= self.cache_seconds or (kid not in entry.keys and age >= self.refetch_interval):
            await self._fetch(client.jwks_uri, entry)
        return entry.keys.get(kid)

    async def _fetch(self, uri: str, entry: _Fetched) -> None:
        entry.fetched_at = time.monotonic()  # also on failure: failures are rate-limited too
        try:
            response = await self.http.get(uri, headers={"Accept": "application/json"})
            response.raise_for_status()
            entry.keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            # Keep the keys we had: a flaky host should not lock its client out at once.
            log.warning("could not fetch a client's jwks_uri %s: %s", uri, type(exc).__name__)
