"""Helpers for identity tests: real keys, real signatures, a real ReplayGuard on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.identity import IdentityProvider, IdentityProviders
from healthmesh.auth.replay import ReplayGuard

T = TypeVar("T")
ISSUER = "https://idp.test.example"
AUDIENCE = "healthmesh-node"


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=True)


def ec_key(curve: str = "P-384") -> ECKey:
    return ECKey.generate_key(curve, auto_kid=True)


def public_jwks(*keys: RSAKey | ECKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def provider(*keys: RSAKey | ECKey, issuer: str = ISSUER) -> IdentityProvider:
    return IdentityProvider(
        issuer=issuer, audiences=(AUDIENCE,), display_name="Test CSP", jwks=public_jwks(*keys)
    )


def ial2_claims(**overrides: Any) -> dict[str, Any]:
    """A CSP-shaped IAL2 payload, issued now, for a synthetic person."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 10,
        "jti": uuid.uuid4().hex,
        "identity_assurance_level": 2,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "birthdate": "1815-12-10",
        "email": "ada@example.org",
        "phone_number": "+1 (555) 010-1815",
        "address": {
            "street_address": "12 St James's Square",
            "locality": "London",
            "region": "LN",
            "postal_code": "02139",
            "country": "US",
        },
        "ssn_itin_short": "1815",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(
    claims: dict[str, Any],
    key: RSAKey | ECKey,
    *,
    alg: str = "RS256",
    kid: str | bool | None = True,
) -> str:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is True:
        header["kid"] = key.kid
    elif isinstance(kid, str):
        header["kid"] = kid
    return jwt.encode(header, claims, key, algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    """alg "none" (RFC 7519 §6): an unsecured JWT."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str | None = None) -> str:
    """The algorithm-confusion attack: HMAC "signed" with a provider's public key bytes."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


async def _with_pool(
    database_url: str, body: Callable[[AsyncConnectionPool[Any]], Awaitable[T]]
) -> T:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        return await body(pool)
    finally:
        await pool.close()


def with_guard(database_url: str, body: Callable[[ReplayGuard], Awaitable[T]]) -> T:
    """Run ``body`` with a ReplayGuard on the test database."""
    return asyncio.run(_with_pool(database_url, lambda pool: body(ReplayGuard(pool))))


def providers_of(*items: IdentityProvider) -> IdentityProviders:
    return IdentityProviders(items)
