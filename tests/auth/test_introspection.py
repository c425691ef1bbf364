"""Introspection (RFC 7662) and revocation (RFC 7009) over HTTP, for both kinds of token."""

from __future__ import annotations

import httpx
import pytest
from auth_support import AppKey, backend_client, client_credentials_form, public_client
from test_refresh import SCOPE, authorize, live, refresh

from healthmesh.auth.clients import Client

from conftest import ServerThread


def _introspect(server: ServerThread, client: Client, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/auth/introspect", data={"token": token, "client_id": client.client_id}
    )


def _revoke(server: ServerThread, client: Client, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/auth/revoke", data={"token": token, "client_id": client.client_id}
    )


@pytest.fixture
def app(database_url: str) -> Client:
    return public_client(database_url)


def test_an_access_token_introspects_as_active_with_its_context(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, refresh_token = authorize(database_url, app)
    access = refresh(server, app, refresh_token).json()["access_token"]
    response = _introspect(server, app, access)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["client_id"] == app.client_id
    assert body["scope"] == SCOPE
    assert body["patient"] == "p-5" and body["fhirUser"] == "Patient/p-5"
    assert body["iss"] == server.base and body["token_type"] == "Bearer"
    assert body["exp"] > body["iat"]


def test_a_refresh_token_introspects_as_active_until_it_is_used(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, refresh_token = authorize(database_url, app)
    body = _introspect(server, app, refresh_token).json()
    assert body["active"] is True and body["token_type"] == "refresh_token"
    assert body["scope"] == SCOPE
    refresh(server, app, refresh_token)
    assert _introspect(server, app, refresh_token).json() == {"active": False}


def test_unknown_and_other_clients_tokens_are_inactive_alike(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, refresh_token = authorize(database_url, app)
    access = refresh(server, app, refresh_token).json()["access_token"]
    stranger = public_client(database_url)
    assert _introspect(server, stranger, access).json() == {"active": False}
    assert _introspect(server, app, "nonsense").json() == {"active": False}
    assert _introspect(server, app, "a.b.c").json() == {"active": False}


def test_introspection_needs_client_authentication(server: ServerThread) -> None:
    response = httpx.post(f"{server.base}/auth/introspect", data={"token": "x"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    response = httpx.post(f"{server.base}/auth/revoke", data={"token": "x"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_a_revoked_access_token_is_refused_on_its_next_use(
    server: ServerThread, database_url: str
) -> None:
    key = AppKey()
    client = backend_client(database_url, key)
    access = httpx.post(
        f"{server.base}/auth/token", data=client_credentials_form(client, key, server.base)
    ).json()["access_token"]
    assert live(database_url, access, server.base)
    form = client_credentials_form(client, key, server.base)
    form = {k: v for k, v in form.items() if k.startswith("client_assertion")}
    response = httpx.post(f"{server.base}/auth/revoke", data={"token": access, **form})
    assert response.status_code == 200, response.text
    assert not live(database_url, access, server.base)
    form = client_credentials_form(client, key, server.base)
    form = {k: v for k, v in form.items() if k.startswith("client_assertion")}
    inactive = httpx.post(f"{server.base}/auth/introspect", data={"token": access, **form})
    assert inactive.json() == {"active": False}


def test_revoking_a_refresh_token_ends_the_grant_and_its_access_tokens(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, first = authorize(database_url, app)
    body = refresh(server, app, first).json()
    assert _revoke(server, app, body["refresh_token"]).status_code == 200
    assert refresh(server, app, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert not live(database_url, body["access_token"], server.base)


def test_another_client_cannot_revoke_a_token_and_learns_nothing(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, refresh_token = authorize(database_url, app)
    stranger = public_client(database_url)
    attempt = _revoke(server, stranger, refresh_token)
    assert attempt.status_code == 200  # as for any token it cannot revoke (RFC 7009 §2.2)
    assert _revoke(server, stranger, "never-issued").status_code == 200
    assert refresh(server, app, refresh_token).status_code == 200  # still alive
