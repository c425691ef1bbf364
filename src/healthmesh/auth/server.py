"""The authorization server, assembled: keys, tokens, clients, grants and the token endpoint.

One :class:`AuthServer` per application. The pieces are public attributes so that the other
flows build on them: the authorization-code flow calls ``grants.create`` and
``token_response`` and registers its grant with ``token_endpoint.register``; enforcement uses
``verifier`` (the TokenVerifier).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from joserfc.jwk import RSAKey
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth import backend_services, refresh
from healthmesh.auth.assertions import AssertionVerifier
from healthmesh.auth.clients import ClientKeys, ClientStore
from healthmesh.auth.cms_smart import NoPatientIdentifier, PatientIdentifier
from healthmesh.auth.grants import Grant, GrantStore
from healthmesh.auth.keys import SigningKeys
from healthmesh.auth.ratelimit import RateLimiter
from healthmesh.auth.replay import ReplayGuard
from healthmesh.auth.settings import AuthSettings
from healthmesh.auth.token_endpoint import ClientAuthenticator, TokenEndpoint
from healthmesh.auth.tokens import JwtVerifier, TokenIssuer

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
log = logging.getLogger(__name__)


class AuthServer:
    def __init__(self, pool: Pool, settings: AuthSettings | None = None) -> None:
        self.settings = settings = settings or AuthSettings()
        self.pool = pool
        self.keys = SigningKeys(pool, leeway=settings.leeway)
        self.issuer = TokenIssuer(self.keys)
        self.verifier = JwtVerifier(self.keys, pool, leeway=settings.leeway)
        self.clients = ClientStore(pool)
        self.client_keys = ClientKeys(
            cache_seconds=settings.jwks_cache_seconds,
            refetch_interval=settings.jwks_refetch_interval,
        )
        self.grants = GrantStore(pool)
        self.replay = ReplayGuard(pool)
        self.assertions = AssertionVerifier(self.client_keys, self.replay, leeway=settings.leeway)
        self.authenticator = ClientAuthenticator(self.clients, self.assertions)
        self.token_endpoint = TokenEndpoint(self.authenticator)
        self.rate_limiter = RateLimiter(
            pool,
            window=settings.rate_window,
            per_client=settings.rate_per_client,
            per_address=settings.rate_per_address,
        )
        # Who an IAL2 id_token names (cms_smart); the application replaces this default.
        self.patient_identifier: PatientIdentifier = NoPatientIdentifier()

        backend_services.install(self)
        refresh.install(self)

    @property
    def refresh_window(self) -> timedelta:
        return timedelta(days=self.settings.refresh_window_days)

    async def start(self) -> None:
        await self.keys.ensure_active()
        await self.keys.reload()

    async def close(self) -> None:
        await self.client_keys.close()

    async def purge(self) -> dict[str, int]:
        """Forget what can no longer matter: seen jtis and revocations of expired JWTs, old
        rate-limit windows. Returns how many rows each table lost."""
        return {
            "auth_seen_jti": await self.replay.purge(),
            "auth_revoked_token": await self.grants.purge(),
            "auth_rate_counter": await self.rate_limiter.purge(),
        }

    async def maintain(self, every: float = 600.0) -> None:
        """Purge periodically, for as long as the application runs (a background task)."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.purge()
            except Exception:  # the database may be briefly away; try again next time
                log.warning("authorization-server purge failed", exc_info=True)

    async def token_response(
        self,
        grant: Grant,
        *,
        issuer: str,
        lifetime: int | None = None,
        scope: str | None = None,
        refresh_token: str | None = None,
        signing_key: tuple[str, RSAKey] | None = None,
    ) -> dict[str, Any]:
        """The RFC 6749 §5.1 success body (plus SMART's ``patient``) for a new access token."""
        token = await self.issuer.issue_access_token(
            grant,
            issuer=issuer,
            lifetime=lifetime or self.settings.access_token_lifetime,
            scope=scope,
            signing_key=signing_key,
        )
        body: dict[str, Any] = {
            "access_token": token.access_token,
            "token_type": "Bearer",
            "expires_in": token.expires_in,
            "scope": token.scope,
        }
        if grant.patient is not None:
            body["patient"] = grant.patient
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body
