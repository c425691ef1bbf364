"""SMART Backend Services over real HTTP: client_credentials with private_key_jwt."""

from __future__ import annotations

import httpx
import pytest
from auth_support import AppKey, backend_client, client_credentials_form, with_auth

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.server import AuthServer

from conftest import ServerThread


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_backend_client_gets_a_system_token_that_the_verifier_accepts(
    server: ServerThread, database_url: str, alg: str
) -> None:
    key = AppKey(alg)
    client = backend_client(database_url, key)
    form = client_credentials_form(client, key, server.base)
    response = httpx.post(f"{server.base}/auth/token", data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "system/Observation.rs"
    assert 0 < body["expires_in"] <= 300
    assert "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"

    async def verify(auth: AuthServer) -> AccessGrant:
        return await auth.verifier.verify(body["access_token"], audience=server.base)

    grant = with_auth(database_url, verify)
    assert grant.client_id == client.client_id
    assert grant.scope == "system/Observation.rs"
