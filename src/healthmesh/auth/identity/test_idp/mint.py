"""Minting IAL2 id_tokens with the test IdP's own key, without a browser login: for tests
and scripts (the cms_smart client_credentials tests need one for a given person)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.identity.providers import IdentityProvider
from healthmesh.auth.identity.test_idp.accounts import claims_of_patient, subject
from healthmesh.auth.identity.test_idp.issue import id_token_claims
from healthmesh.auth.identity.test_idp.keys import SigningKeys
from healthmesh.store.identity_provider import IdpStore, Pool

T = TypeVar("T")


async def mint_ial2_id_token(
    pool: Pool,
    *,
    issuer: str,
    audience: str,
    patient: Mapping[str, Any],
    auth_time: int | None = None,
    **overrides: Any,
) -> str:
    """An id_token as the test IdP would issue after a login now, for the person of the FHIR
    ``patient`` resource; ``overrides`` replace or (with value None) remove claims."""
    store = IdpStore(pool)
    patient_id = str(patient.get("id", ""))
    account = await store.account_of_patient(patient_id) if patient_id else None
    sub = account.subject if account else subject(await store.seed(), patient_id or "anonymous")
    now = int(time.time())
    claims = id_token_claims(
        issuer=issuer,
        subject=sub,
        audience=audience,
        person=claims_of_patient(patient),
        auth_time=now if auth_time is None else auth_time,
        now=now,
    )
    for key, value in overrides.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return await SigningKeys(store).sign(claims)


async def provider_of_test_idp(
    pool: Pool, *, issuer: str, audiences: tuple[str, ...], display_name: str = "TEST IdP"
) -> IdentityProvider:
    """The test IdP as an allow-listed provider, its JWKS inline (no HTTP to ourselves)."""
    jwks = await SigningKeys(IdpStore(pool)).jwks()
    return IdentityProvider(
        issuer=issuer, audiences=audiences, display_name=display_name, jwks=jwks
    )


def _run(database_url: str, body: Callable[[Pool], Awaitable[T]]) -> T:
    async def main() -> T:
        pool: Pool = AsyncConnectionPool(
            database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def mint_ial2_id_token_sync(database_url: str, **kwargs: Any) -> str:
    """:func:`mint_ial2_id_token` for synchronous tests and scripts (own event loop)."""
    return _run(database_url, lambda pool: mint_ial2_id_token(pool, **kwargs))


def provider_of_test_idp_sync(database_url: str, **kwargs: Any) -> IdentityProvider:
    return _run(database_url, lambda pool: provider_of_test_idp(pool, **kwargs))
