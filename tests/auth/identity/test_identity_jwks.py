"""Providers' JWKS over real HTTP: cached, refetched on an unknown kid, at a limited rate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from healthmesh.auth.identity import (
    IdentityProvider,
    IdentityProviders,
    IdentityRefused,
    load_providers,
    verify_ial2_id_token,
)
from healthmesh.auth.replay import ReplayGuard
from identity_support import AUDIENCE, ISSUER, ial2_claims, public_jwks, rsa_key, sign, with_guard

from conftest import free_port


class JwksServer:
    """A provider's key endpoint whose keys the test can rotate, counting its requests."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.requests = 0
        self.port = free_port()

        async def jwks(request: Request) -> JSONResponse:
            self.requests += 1
            return JSONResponse(self.jwks)

        app = Starlette(routes=[Route("/jwks", jwks)])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    running = JwksServer()
    running.thread.start()
    deadline = time.monotonic() + 30
    while not running.server.started:
        assert time.monotonic() < deadline and running.thread.is_alive()
        time.sleep(0.02)
    yield running
    running.server.should_exit = True
    running.thread.join(10)


def _verify_all(database_url: str, providers: IdentityProviders, tokens: list[str]) -> list[str]:
    async def body(guard: ReplayGuard) -> list[str]:
        out = []
        for token in tokens:
            try:
                await verify_ial2_id_token(token, providers=providers, replay=guard)
                out.append("ok")
            except IdentityRefused as refused:
                out.append(refused.code)
        return out

    return with_guard(database_url, body)


def test_keys_are_fetched_once_and_cached(jwks_server: JwksServer, database_url: str) -> None:
    key = rsa_key()
    jwks_server.jwks = public_jwks(key)
    before = jwks_server.requests
    providers = IdentityProviders(
        [IdentityProvider(issuer=ISSUER, audiences=(AUDIENCE,), jwks_uri=jwks_server.uri)]
    )
    tokens = [sign(ial2_claims(), key) for _ in range(3)]
    assert _verify_all(database_url, providers, tokens) == ["ok"] * 3
    assert jwks_server.requests - before == 1


def test_a_rotated_key_is_found_by_refetching(jwks_server: JwksServer, database_url: str) -> None:
    old, new = rsa_key(), rsa_key()
    jwks_server.jwks = public_jwks(old)
    providers = IdentityProviders(
        [IdentityProvider(issuer=ISSUER, audiences=(AUDIENCE,), jwks_uri=jwks_server.uri)],
        min_refetch_seconds=0,
    )
    first = _verify_all(database_url, providers, [sign(ial2_claims(), old)])
    jwks_server.jwks = public_jwks(old, new)
    second = _verify_all(database_url, providers, [sign(ial2_claims(), new)])
    assert first + second == ["ok", "ok"]


def test_unknown_kids_do_not_make_us_hammer_the_provider(
    jwks_server: JwksServer, database_url: str
) -> None:
    key, stranger = rsa_key(), rsa_key()
    jwks_server.jwks = public_jwks(key)
    before = jwks_server.requests
    providers = IdentityProviders(
        [IdentityProvider(issuer=ISSUER, audiences=(AUDIENCE,), jwks_uri=jwks_server.uri)],
        min_refetch_seconds=3600,
    )
    tokens = [sign(ial2_claims(), key)] + [sign(ial2_claims(), stranger) for _ in range(5)]
    assert _verify_all(database_url, providers, tokens) == ["ok"] + ["unknown_key"] * 5
    assert jwks_server.requests - before == 1


def test_an_unreachable_jwks_is_a_refusal_not_a_crash(database_url: str) -> None:
    providers = IdentityProviders(
        [
            IdentityProvider(
                issuer=ISSUER,
                audiences=(AUDIENCE,),
                jwks_uri=f"http://127.0.0.1:{free_port()}/jwks",
            )
        ]
    )
    assert _verify_all(database_url, providers, [sign(ial2_claims(), rsa_key())]) == ["unknown_key"]


def test_providers_load_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    path.write_text(
        '[{"issuer": "https://login.example", "audience": "node-1", "name": "Example CSP",'
        ' "jwks_uri": "https://login.example/jwks"}]'
    )
    (provider,) = load_providers(path)
    assert (provider.issuer, provider.audiences, provider.display_name) == (
        "https://login.example",
        ("node-1",),
        "Example CSP",
    )


def test_a_provider_configured_with_a_symmetric_algorithm_is_rejected() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        IdentityProvider(
            issuer=ISSUER, audiences=(AUDIENCE,), jwks={"keys": []}, algorithms=("HS256",)
        )


def test_concurrent_verifications_share_one_fetch(
    jwks_server: JwksServer, database_url: str
) -> None:
    key = rsa_key()
    jwks_server.jwks = public_jwks(key)
    before = jwks_server.requests
    providers = IdentityProviders(
        [IdentityProvider(issuer=ISSUER, audiences=(AUDIENCE,), jwks_uri=jwks_server.uri)]
    )
    tokens = [sign(ial2_claims(), key) for _ in range(8)]

    async def body(guard: ReplayGuard) -> list[str]:
        results = await asyncio.gather(
            *(verify_ial2_id_token(t, providers=providers, replay=guard) for t in tokens)
        )
        return [c.issuer for c in results]

    assert with_guard(database_url, body) == [ISSUER] * 8
    assert jwks_server.requests - before == 1
