"""Access tokens: what is issued, and every way a bad one is refused by the verifier."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from auth_support import AppKey, backend_client, forged, hs256_with, with_auth
from joserfc import jwt
from joserfc.jwk import RSAKey
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.grant import AccessGrant, InvalidToken
from healthmesh.auth.grants import Grant
from healthmesh.auth.server import AuthServer
from healthmesh.auth.tokens import JwtVerifier

BASE = "https://fhir.example/fhir"


async def _grant(auth: AuthServer, client_id: str, **values: Any) -> Grant:
    return await auth.grants.create(
        client_id=client_id,
        kind="test",
        scope=values.pop("scope", "system/Observation.rs"),
        lifetime=values.pop("lifetime", timedelta(hours=1)),
        **values,
    )


async def _claims(auth: AuthServer, client_id: str) -> tuple[dict[str, Any], str, RSAKey]:
    """Valid claims for a live grant, and the active key, for tests that sign by hand."""
    grant = await _grant(auth, client_id)
    issued = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
    claims = dict(jwt.decode(issued.access_token, (await auth.keys.signing_key())[1]).claims)
    kid, key = await auth.keys.signing_key()
    return claims, kid, key


@pytest.fixture
def client_id(database_url: str) -> str:
    return backend_client(database_url, AppKey()).client_id


def test_an_issued_token_carries_the_grant_and_verifies_into_an_access_grant(
    database_url: str, client_id: str
) -> None:
    async def body(auth: AuthServer) -> tuple[AccessGrant, dict[str, Any], Grant]:
        grant = await _grant(
            auth,
            client_id,
            scope="patient/Observation.rs patient/Patient.r",
            patient="p-1",
            fhir_user="Patient/p-1",
            organization="org-9",
            purpose_of_use="PATRQT",
        )
        issued = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=900)
        claims = dict(jwt.decode(issued.access_token, (await auth.keys.signing_key())[1]).claims)
        return await auth.verifier.verify(issued.access_token, audience=BASE), claims, grant

    verified, claims, grant = with_auth(database_url, body)
    assert verified == AccessGrant(
        client_id=client_id,
        scope="patient/Observation.rs patient/Patient.r",
        patient="p-1",
        fhir_user="Patient/p-1",
        organization="org-9",
        purpose_of_use="PATRQT",
        token_id=claims["jti"],
        grant_id=grant.grant_id,
        expires_at=claims["exp"],
    )
    assert claims["iss"] == claims["aud"] == BASE
    assert claims["sub"] == client_id
    assert claims["exp"] - claims["iat"] == 900
    assert claims["grant_id"] == grant.grant_id


def test_no_access_token_lives_longer_than_an_hour(database_url: str, client_id: str) -> None:
    async def body(auth: AuthServer) -> None:
        grant = await _grant(auth, client_id, lifetime=timedelta(days=90))
        with pytest.raises(ValueError, match="lifetime"):
            await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=3601)

    with_auth(database_url, body)


def test_a_token_never_outlives_its_grant(database_url: str, client_id: str) -> None:
    async def body(auth: AuthServer) -> int:
        grant = await _grant(auth, client_id, lifetime=timedelta(seconds=120))
        return (await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=3600)).expires_in

    assert 0 < with_auth(database_url, body) <= 120


@pytest.fixture
def refuse(database_url: str, client_id: str) -> Any:
    """The verifier's reason for refusing the token ``make(auth, claims, kid, key)`` builds
    from valid claims of a live grant and the server's active key."""

    def run(make: Any) -> str:
        async def body(auth: AuthServer) -> str:
            claims, kid, key = await _claims(auth, client_id)
            token = await make(auth, claims, kid, key)
            with pytest.raises(InvalidToken) as refused:
                await auth.verifier.verify(token, audience=BASE)
            assert token not in str(refused.value)
            return refused.value.reason

        return with_auth(database_url, body)

    return run


def test_alg_none_tokens_are_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return forged({"alg": "none", "kid": kid, "typ": "at+jwt"}, claims)

    assert "RS256" in refuse(make)


def test_unsigned_tokens_are_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return forged(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims
        )  # RS256 claimed, no signature

    assert "signature" in refuse(make)


def test_hs256_signed_with_the_servers_public_key_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        public_pem = key.as_pem(private=False)
        return hs256_with(public_pem, {"kid": kid, "typ": "at+jwt"}, claims)

    assert "RS256" in refuse(make)


def test_a_token_signed_by_another_key_under_our_kid_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        other = RSAKey.generate_key(2048, private=True)
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, other)

    assert "signature" in refuse(make)


def test_a_token_with_an_unknown_kid_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode({"alg": "RS256", "kid": "not-ours", "typ": "at+jwt"}, claims, key)

    assert "key" in refuse(make)


def test_a_tampered_payload_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        token = jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, key)
        head, _, sig = token.split(".")
        body = forged({}, {**claims, "scope": "system/*.cruds"}).split(".")[1]
        return f"{head}.{body}.{sig}"

    assert "signature" in refuse(make)


def test_an_expired_token_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        now = int(time.time())
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"},
            {**claims, "iat": now - 900, "exp": now - 120},
            key,
        )

    assert "expired" in refuse(make).lower()


def test_a_not_yet_valid_token_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"},
            {**claims, "nbf": int(time.time()) + 300},
            key,
        )

    assert "not yet valid" in refuse(make)


def test_a_token_issued_in_the_future_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"},
            {**claims, "iat": int(time.time()) + 300},
            key,
        )

    assert "future" in refuse(make)


def test_a_token_for_another_audience_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"},
            {**claims, "aud": "https://other.example/fhir"},
            key,
        )

    assert "aud" in refuse(make)


def test_a_token_from_another_issuer_is_refused(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "at+jwt"},
            {**claims, "iss": "https://evil.example"},
            key,
        )

    assert "iss" in refuse(make)


def test_another_jwt_of_ours_is_not_an_access_token(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": "JWT"}, claims, key)

    assert "at+jwt" in refuse(make)


def test_garbage_is_refused_without_echoing_it(refuse: Any) -> None:
    async def make(auth: AuthServer, claims: dict[str, Any], kid: str, key: RSAKey) -> str:
        return "not-a-jwt-at-all"

    assert "JWS" in refuse(make)


def test_a_revoked_token_is_refused_on_its_next_use(database_url: str, client_id: str) -> None:
    async def body(auth: AuthServer) -> str:
        grant = await _grant(auth, client_id)
        issued = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        other = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        await auth.verifier.verify(issued.access_token, audience=BASE)
        await auth.grants.revoke_access_token(issued.jti, issued.expires_at)
        await auth.verifier.verify(other.access_token, audience=BASE)  # the grant lives on
        with pytest.raises(InvalidToken) as refused:
            await auth.verifier.verify(issued.access_token, audience=BASE)
        return refused.value.reason

    assert "revoked" in with_auth(database_url, body)


def test_revoking_a_grant_kills_all_its_tokens(database_url: str, client_id: str) -> None:
    async def body(auth: AuthServer) -> int:
        grant = await _grant(auth, client_id)
        tokens = [
            (await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)).access_token
            for _ in range(3)
        ]
        await auth.grants.revoke(grant.grant_id)
        refused = 0
        for token in tokens:
            try:
                await auth.verifier.verify(token, audience=BASE)
            except InvalidToken:
                refused += 1
        return refused

    assert with_auth(database_url, body) == 3


def test_disabling_a_client_stops_its_live_tokens(database_url: str) -> None:
    client = backend_client(database_url, AppKey())

    async def body(auth: AuthServer) -> None:
        grant = await _grant(auth, client.client_id)
        issued = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        await auth.verifier.verify(issued.access_token, audience=BASE)
        assert await auth.clients.set_disabled(client.client_id)
        with pytest.raises(InvalidToken):
            await auth.verifier.verify(issued.access_token, audience=BASE)

    with_auth(database_url, body)


class CountingConnection(AsyncConnection[Any]):
    """A real connection that counts the statements sent through it."""

    statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.statements += 1
        return await super().execute(*args, **kwargs)


def test_verification_is_one_sql_round_trip(database_url: str, client_id: str) -> None:
    async def body(auth: AuthServer) -> int:
        grant = await _grant(auth, client_id)
        issued = await auth.issuer.issue_access_token(grant, issuer=BASE, lifetime=600)
        pool: Any = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=1,
            open=False,
            connection_class=CountingConnection,
            kwargs={"autocommit": True},
        )
        await pool.open()
        try:
            verifier = JwtVerifier(auth.keys, pool)
            await verifier.verify(issued.access_token, audience=BASE)  # warm the key cache
            before = CountingConnection.statements
            for _ in range(5):
                await verifier.verify(issued.access_token, audience=BASE)
            return CountingConnection.statements - before
        finally:
            await pool.close()

    assert with_auth(database_url, body) == 5
