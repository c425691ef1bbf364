"""Credentials for the authorization benchmark, made straight in the node's database.

Everything here is set-up, never timed: access tokens minted by the node's own AuthServer
(a grant in ``auth_grant`` and a signed JWT for it, as the token endpoint does), registered
clients, test-IdP accounts for loaded patients, IAL2 id_tokens signed with the test IdP's
key, and private_key_jwt client assertions. The lines follow tests/secured.py and
tests/auth/*_support.py (bench code does not import tests/).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pyotp
from joserfc import jwt
from joserfc.jwk import ECKey
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.assertions import ASSERTION_TYPE
from healthmesh.auth.clients import Client
from healthmesh.auth.identity.test_idp import IdpStore, claims_of_patient
from healthmesh.auth.identity.test_idp.accounts import hash_password
from healthmesh.auth.identity.test_idp.mint import mint_ial2_id_token
from healthmesh.auth.server import AuthServer
from healthmesh.store.identity_provider import AccountRow

T = TypeVar("T")
REDIRECT = "https://app.example/callback"


def with_pool(database_url: str, body: Callable[[Any], Awaitable[T]], size: int = 4) -> T:
    async def run() -> T:
        pool: Any = AsyncConnectionPool(
            database_url, min_size=1, max_size=size, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def with_auth(database_url: str, body: Callable[[AuthServer], Awaitable[T]]) -> T:
    async def run(pool: Any) -> T:
        auth = AuthServer(pool)
        try:
            await auth.start()
            return await body(auth)
        finally:
            await auth.close()

    return with_pool(database_url, run)


def register(database_url: str, client: Client) -> Client:
    async def body(auth: AuthServer) -> Client:
        return await auth.clients.add(client)

    return with_auth(database_url, body)


def mint_tokens(
    database_url: str, issuer: str, client_id: str, requests: list[tuple[str, str | None]]
) -> list[str]:
    """One access token per ``(scope, patient)``, for a client registered here with scope *."""

    async def body(auth: AuthServer) -> list[str]:
        if await auth.clients.get(client_id) is None:
            await auth.clients.add(
                Client(
                    client_id=client_id,
                    name=f"Benchmark app {client_id}",
                    scope="*",
                    redirect_uris=("http://127.0.0.1/callback",),
                )
            )
        tokens = []
        for scope, patient in requests:
            grant = await auth.grants.create(
                client_id=client_id,
                kind="cli",
                subject=f"{client_id}-user",
                scope=scope,
                lifetime=timedelta(hours=1),
                patient=patient,
            )
            issued = await auth.issuer.issue_access_token(grant, issuer=issuer, lifetime=3600)
            tokens.append(issued.access_token)
        return tokens

    return with_auth(database_url, body)


class AppKey:
    """A backend app's ES384 key pair and its public JWKS."""

    alg = "ES384"

    def __init__(self) -> None:
        self.kid = secrets.token_hex(8)
        self.key = ECKey.generate_key("P-384", private=True)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg}]}

    def assertion(self, client_id: str, audience: str, **claims: Any) -> str:
        """A private_key_jwt client assertion (SMART Backend Services), a fresh jti each."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": now + 240,
            "iat": now,
            "jti": uuid.uuid4().hex,
        } | claims
        head = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(head, body, self.key, algorithms=[self.alg])


def backend_client(database_url: str, key: AppKey, scope: str) -> Client:
    return register(
        database_url,
        Client(
            client_id=f"bench-backend-{uuid.uuid4().hex[:10]}",
            name="Benchmark backend app",
            token_endpoint_auth_method="private_key_jwt",
            jwks=key.jwks,
            scope=scope,
            grant_types=("client_credentials",),
        ),
    )


def public_client(database_url: str) -> Client:
    return register(
        database_url,
        Client(
            client_id=f"bench-app-{uuid.uuid4().hex[:10]}",
            name="Benchmark patient app",
            redirect_uris=(REDIRECT,),
            scope="openid fhirUser launch/patient offline_access patient/*.rs",
            grant_types=("authorization_code", "refresh_token"),
        ),
    )


def cms_smart_forms(
    database_url: str,
    *,
    client: Client,
    key: AppKey,
    token_url: str,
    idp_issuer: str,
    idp_audience: str,
    patients: Sequence[Mapping[str, Any]],
) -> list[dict[str, str]]:
    """Token request bodies, one per patient: client_credentials with a private_key_jwt
    assertion carrying ``extensions.cms_smart`` with an IAL2 id_token (each its own jti)."""

    async def body(pool: Any) -> list[str]:
        return [
            await mint_ial2_id_token(pool, issuer=idp_issuer, audience=idp_audience, patient=p)
            for p in patients
        ]

    id_tokens = with_pool(database_url, body)
    forms = []
    for id_token in id_tokens:
        extensions = {
            "cms_smart": {"version": "1", "purpose_of_use": "PATRQT", "id_token": id_token}
        }
        forms.append(
            {
                "grant_type": "client_credentials",
                "scope": "patient/*.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": key.assertion(
                    client.client_id, token_url, extensions=extensions
                ),
            }
        )
    return forms


def idp_accounts(database_url: str, patients: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """A test-IdP login (password + TOTP secret) for each loaded patient."""

    people = [
        {
            "patient_id": str(p["id"]),
            "username": f"bench{uuid.uuid4().hex[:12]}",
            "password": secrets.token_urlsafe(12),
            "totp_secret": pyotp.random_base32(),
        }
        for p in patients
    ]

    async def body(pool: Any) -> None:
        store = IdpStore(pool)
        for p, who in zip(patients, people, strict=True):
            await store.upsert_account(
                AccountRow(
                    username=who["username"],
                    patient_id=who["patient_id"],
                    subject=uuid.uuid4().hex,
                    password_hash=hash_password(who["password"]),
                    totp_secret=who["totp_secret"],
                    last_totp_step=0,
                    claims=json.dumps(claims_of_patient(p), sort_keys=True),
                )
            )

    with_pool(database_url, body)
    return people
