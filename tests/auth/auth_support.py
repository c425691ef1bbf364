"""Helpers for the authorization-server tests: real keys, real assertions, real database."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.assertions import ASSERTION_TYPE
from healthmesh.auth.clients import Client
from healthmesh.auth.server import AuthServer
from healthmesh.auth.settings import AuthSettings

T = TypeVar("T")


def with_auth(
    database_url: str,
    body: Callable[[AuthServer], Awaitable[T]],
    settings: AuthSettings | None = None,
) -> T:
    """Run ``body`` against an AuthServer on its own pool (another 'process' on the same DB)."""

    async def run() -> T:
        pool: Any = AsyncConnectionPool(
            database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        auth = AuthServer(pool, settings)
        try:
            await auth.start()
            return await body(auth)
        finally:
            await auth.close()
            await pool.close()

    return asyncio.run(run())


class AppKey:
    """A client's key pair, RS384 or ES384, with its public JWKS."""

    def __init__(self, alg: str = "RS384") -> None:
        self.alg = alg
        self.kid = secrets.token_hex(8)
        self.key: RSAKey | ECKey = (
            RSAKey.generate_key(2048, private=True)
            if alg.startswith("RS")
            else ECKey.generate_key("P-384", private=True)
        )

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=False), "kid": self.kid, "alg": self.alg}]}

    def assertion(
        self,
        client_id: str,
        audience: str,
        *,
        lifetime: int = 240,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": now + lifetime,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        head = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        head.update(header or {})
        return jwt.encode(
            head, {k: v for k, v in body.items() if v is not None}, self.key, algorithms=[self.alg]
        )


def register(database_url: str, client: Client) -> Client:
    async def body(auth: AuthServer) -> Client:
        return await auth.clients.add(client)

    return with_auth(database_url, body)


def backend_client(database_url: str, key: AppKey, **overrides: Any) -> Client:
    """A registered confidential client with system/ scopes and client_credentials."""
    values: dict[str, Any] = {
        "client_id": f"backend-{uuid.uuid4().hex[:10]}",
        "name": "Backend test client",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": key.jwks,
        "scope": "system/*.rs patient/*.rs",
        "grant_types": ("client_credentials",),
    }
    values.update(overrides)
    return register(database_url, Client(**values))


def token_request(
    http: httpx.Client, base: str, form: dict[str, str], **kwargs: Any
) -> httpx.Response:
    return http.post(f"{base}/auth/token", data=form, **kwargs)


def client_credentials_form(
    client: Client, key: AppKey, base: str, scope: str = "system/Observation.rs", **claims: Any
) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.assertion(client.client_id, f"{base}/auth/token", **claims),
    }


def public_client(database_url: str, **overrides: Any) -> Client:
    """A registered public app: authorization_code + refresh_token, patient/ scopes."""
    values: dict[str, Any] = {
        "client_id": f"app-{uuid.uuid4().hex[:10]}",
        "name": "Patient app",
        "redirect_uris": ("https://app.example/callback",),
        "scope": "patient/*.rs launch/patient openid fhirUser offline_access",
        "grant_types": ("authorization_code", "refresh_token"),
    }
    values.update(overrides)
    return register(database_url, Client(**values))


def b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT put together by hand, as an attacker would (no library refuses to make it)."""
    import json

    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signature)}"


def hs256_with(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """The classic key-confusion attack: HMAC-SHA256 keyed with the server's PUBLIC key."""
    import hashlib
    import hmac
    import json

    head = b64(json.dumps({**header, "alg": "HS256"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def auth_of(running: Any) -> AuthServer:
    """The AuthServer inside a (not yet started) ServerThread's app."""
    from starlette.applications import Starlette

    app = running.server.config.app
    assert isinstance(app, Starlette)
    auth = app.state.auth
    assert isinstance(auth, AuthServer)
    return auth
