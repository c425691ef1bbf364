"""Signing keys: created once, published as a JWKS, rotated without breaking live tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from auth_support import AppKey, backend_client, with_auth
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from healthmesh.auth.grant import InvalidToken
from healthmesh.auth.server import AuthServer

from conftest import ServerThread

BASE = "https://fhir.example/fhir"


def test_the_jwks_publishes_the_active_rs256_key_by_its_thumbprint(server: ServerThread) -> None:
    response = httpx.get(f"{server.base}/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for jwk in keys:
        assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)  # never the private half
        public = RSAKey.import_key(jwk)
        assert public.thumbprint() == jwk["kid"]  # RFC 7638
        assert public.as_dict()["n"] and len(public.as_dict()["n"]) >= 342  # 2048-bit modulus


def test_a_token_verifies_with_the_published_jwks_alone(
    server: ServerThread, database_url: str
) -> None:
    """What a third party (a resource server elsewhere) does with jwks_uri."""
    client = backend_client(database_url, AppKey())

    async def body(auth: AuthServer) -> str:
        grant = await auth.grants.create(
            client_id=client.client_id,
            kind="test",
            scope="system/*.rs",
            lifetime=timedelta(hours=1),
        )
        issued = await auth.issuer.issue_access_token(grant, issuer=server.base, lifetime=60)
        return issued.access_token

    token = with_auth(database_url, body)
    jwks = KeySet.import_key_set(httpx.get(f"{server.base}/.well-known/jwks.json").json())
    claims = jwt.decode(token, jwks, algorithms=["RS256"]).claims
    assert claims["client_id"] == client.client_id


@pytest.fixture
def isolated_keys(database_url: str) -> Iterator[None]:
    """Key tests own the key table of this worker's database while they run, and leave an
    active key behind for the servers of later tests."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM auth_signing_key")
    yield

    async def ensure(auth: AuthServer) -> str:
        return await auth.keys.ensure_active()

    with_auth(database_url, ensure)


@pytest.mark.usefixtures("isolated_keys")
def test_concurrent_first_starts_create_one_key(database_url: str) -> None:
    async def body() -> tuple[set[str], int]:
        from psycopg_pool import AsyncConnectionPool

        pool: Any = AsyncConnectionPool(
            database_url, min_size=6, max_size=6, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        try:
            servers = [AuthServer(pool) for _ in range(6)]
            kids = await asyncio.gather(*(s.keys.ensure_active() for s in servers))
            for s in servers:
                await s.close()
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM auth_signing_key")
                row = await cur.fetchone()
            return set(kids), row[0] if row else -1
        finally:
            await pool.close()

    kids, stored = asyncio.run(body())
    assert len(kids) == 1 and stored == 1


@pytest.mark.usefixtures("isolated_keys")
def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    database_url: str,
) -> None:
    client = backend_client(database_url, AppKey())

    async def body(auth: AuthServer) -> None:
        grant = await auth.grants.create(
            client_id=client.client_id,
            kind="test",
            scope="system/*.rs",
            lifetime=timedelta(hours=1),
        )
        old_kid = await auth.keys.ensure_active()
        before = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=3600)

        new_kid = await auth.keys.rotate()
        assert new_kid != old_kid
        after = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=3600)
        assert (
            jwt.decode(
                after.access_token, RSAKey.import_key((await auth.keys.jwks())["keys"][0])
            ).header["kid"]
            == new_kid
        )

        published = {k["kid"] for k in (await auth.keys.jwks())["keys"]}
        assert published == {old_kid, new_kid}
        await auth.verifier.verify(before.access_token, audience=BASE)
        await auth.verifier.verify(after.access_token, audience=BASE)

    with_auth(database_url, body)


@pytest.mark.usefixtures("isolated_keys")
def test_a_rotation_in_another_process_is_followed_for_signing_and_verifying(
    database_url: str,
) -> None:
    client = backend_client(database_url, AppKey())

    async def body(auth: AuthServer) -> None:
        grant = await auth.grants.create(
            client_id=client.client_id,
            kind="test",
            scope="system/*.rs",
            lifetime=timedelta(hours=1),
        )
        first = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        await auth.verifier.verify(first.access_token, audience=BASE)  # caches the first key

        async def rotate_elsewhere(other: AuthServer) -> str:
            return await other.keys.rotate()

        new_kid = await asyncio.to_thread(with_auth, database_url, rotate_elsewhere)
        token = (
            await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        ).access_token
        kid = jwt.decode(token, RSAKey.import_key((await auth.keys.jwks())["keys"][0])).header[
            "kid"
        ]
        assert kid == new_kid  # this process signs with the new key at once
        await auth.verifier.verify(token, audience=BASE)  # an unknown kid reloads the keys

    with_auth(database_url, body)


@pytest.mark.usefixtures("isolated_keys")
def test_a_retired_key_is_unpublished_and_refused_once_its_tokens_have_expired(
    database_url: str,
) -> None:
    client = backend_client(database_url, AppKey())

    async def body(auth: AuthServer) -> None:
        grant = await auth.grants.create(
            client_id=client.client_id,
            kind="test",
            scope="system/*.rs",
            lifetime=timedelta(hours=1),
        )
        old_kid = await auth.keys.ensure_active()
        old_token = (
            await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        ).access_token
        await auth.keys.rotate()
        async with auth.pool.connection() as conn:
            # Time passes: the retirement margin (longest token lifetime + leeway) is over.
            await conn.execute(
                "UPDATE auth_signing_key SET publish_until = now() - interval '1 second'"
                " WHERE kid = %s",
                (old_kid,),
            )
        assert old_kid not in {k["kid"] for k in (await auth.keys.jwks())["keys"]}
        fresh = AuthServer(auth.pool)  # another process: nothing cached
        with pytest.raises(InvalidToken, match="not signed by a key"):
            await fresh.verifier.verify(old_token, audience=BASE)
        await fresh.close()

    with_auth(database_url, body)


@pytest.mark.usefixtures("isolated_keys")
def test_retirement_keeps_a_key_published_for_the_longest_token_lifetime(
    database_url: str,
) -> None:
    async def body(auth: AuthServer) -> float:
        old_kid = await auth.keys.ensure_active()
        await auth.keys.rotate()
        async with auth.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM publish_until - retired_at) FROM auth_signing_key"
                " WHERE kid = %s",
                (old_kid,),
            )
            row = await cur.fetchone()
        assert row is not None
        return float(row[0])

    assert with_auth(database_url, body) >= 3600
