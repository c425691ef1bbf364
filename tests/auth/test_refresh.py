"""The refresh_token grant: rotation, reuse detection, scope, client binding, the 90-day window."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from auth_support import AppKey, public_client, register, with_auth

from healthmesh.auth.assertions import ASSERTION_TYPE
from healthmesh.auth.clients import Client
from healthmesh.auth.grant import InvalidToken
from healthmesh.auth.server import AuthServer

from conftest import ServerThread

SCOPE = "patient/Observation.rs patient/Patient.rs offline_access"


def authorize(database_url: str, client: Client, scope: str = SCOPE) -> tuple[str, str]:
    """What the authorization-code flow does on success: a grant and its first refresh token."""

    async def body(auth: AuthServer) -> tuple[str, str]:
        grant = await auth.grants.create(
            client_id=client.client_id,
            kind="authorization_code",
            scope=scope,
            lifetime=auth.refresh_window,
            subject="Patient/p-5",
            patient="p-5",
            fhir_user="Patient/p-5",
        )
        return grant.grant_id, await auth.grants.issue_refresh_token(grant.grant_id)

    return with_auth(database_url, body)


def refresh(
    server: ServerThread, client: Client, token: str, scope: str | None = None, **extra: str
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client.client_id}
    if scope is not None:
        form["scope"] = scope
    form.update(extra)
    return httpx.post(f"{server.base}/auth/token", data=form)


def live(database_url: str, access_token: str, audience: str) -> bool:
    async def body(auth: AuthServer) -> bool:
        try:
            await auth.verifier.verify(access_token, audience=audience)
        except InvalidToken:
            return False
        return True

    return with_auth(database_url, body)


@pytest.fixture
def app(database_url: str) -> Client:
    return public_client(database_url)


def test_a_refresh_rotates_the_token_and_keeps_the_patient_context(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, token = authorize(database_url, app)
    response = refresh(server, app, token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"] != token
    assert body["scope"] == SCOPE
    assert body["patient"] == "p-5"
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 3600
    assert response.headers["cache-control"] == "no-store"
    assert live(database_url, body["access_token"], server.base)
    second = refresh(server, app, body["refresh_token"])
    assert second.status_code == 200, second.text


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, first = authorize(database_url, app)
    body = refresh(server, app, first).json()
    replay = refresh(server, app, first)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "revoked" in replay.json()["error_description"]
    # The successor, and the access token issued with it, died with the family.
    assert refresh(server, app, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert not live(database_url, body["access_token"], server.base)


def test_of_concurrent_uses_of_one_refresh_token_one_wins(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, token = authorize(database_url, app)

    async def race() -> list[int]:
        async with httpx.AsyncClient() as http:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": app.client_id,
            }
            responses = await asyncio.gather(
                *(http.post(f"{server.base}/auth/token", data=form) for _ in range(4))
            )
        return sorted(r.status_code for r in responses)

    assert asyncio.run(race()) == [200, 400, 400, 400]


def test_a_refresh_may_narrow_the_scope(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, token = authorize(database_url, app)
    response = refresh(server, app, token, scope="patient/Observation.r")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "patient/Observation.r"
    # Narrowing one token does not shrink the grant: the next refresh may ask for all of it.
    wide = refresh(server, app, response.json()["refresh_token"], scope=SCOPE)
    assert wide.status_code == 200 and wide.json()["scope"] == SCOPE


def test_a_refresh_asking_for_more_scope_is_invalid_scope_and_spends_nothing(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, token = authorize(database_url, app)
    escalated = refresh(server, app, token, scope="patient/Observation.cruds")
    assert escalated.status_code == 400
    assert escalated.json()["error"] == "invalid_scope"
    also = refresh(server, app, token, scope="patient/Observation.rs patient/Condition.rs")
    assert also.json()["error"] == "invalid_scope"
    assert refresh(server, app, token).status_code == 200  # the token was not consumed


def test_a_refresh_token_presented_by_another_client_is_invalid_grant(
    server: ServerThread, database_url: str, app: Client
) -> None:
    _, token = authorize(database_url, app)
    thief = public_client(database_url)
    stolen = refresh(server, thief, token)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert refresh(server, app, token).status_code == 200  # the owner is not locked out


def test_an_unknown_refresh_token_is_invalid_grant(server: ServerThread, app: Client) -> None:
    response = refresh(server, app, "made-up-token")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_a_refresh_without_refresh_token_is_invalid_request(
    server: ServerThread, app: Client
) -> None:
    response = httpx.post(
        f"{server.base}/auth/token",
        data={"grant_type": "refresh_token", "client_id": app.client_id},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def _move_window(database_url: str, grant_id: str, end: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE auth_grant SET expires_at = now() + %s::interval WHERE grant_id = %s",
            (end, grant_id),
        )


def test_refresh_ends_with_the_window_of_the_original_authorization(
    server: ServerThread, database_url: str, app: Client
) -> None:
    grant_id, token = authorize(database_url, app)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT expires_at - created_at FROM auth_grant WHERE grant_id = %s", (grant_id,)
        ).fetchone()
    assert row is not None and row[0] == timedelta(days=90)

    _move_window(database_url, grant_id, "100 seconds")  # 89 days and change have passed
    near_end = refresh(server, app, token)
    assert near_end.status_code == 200
    assert near_end.json()["expires_in"] <= 100  # the access token stops with the window
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT expires_at - now() FROM auth_grant WHERE grant_id = %s", (grant_id,)
        ).fetchone()
    assert row is not None and row[0] <= timedelta(seconds=100)  # rotation did not extend it

    _move_window(database_url, grant_id, "-1 second")
    expired = refresh(server, app, near_end.json()["refresh_token"])
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"


def test_a_confidential_client_refreshes_with_its_assertion(
    server: ServerThread, database_url: str
) -> None:
    key = AppKey("ES384")
    client = register(
        database_url,
        Client(
            client_id=f"conf-{key.kid}",
            name="Confidential app",
            token_endpoint_auth_method="private_key_jwt",
            jwks=key.jwks,
            redirect_uris=("https://conf.example/cb",),
            scope=SCOPE,
            grant_types=("authorization_code", "refresh_token"),
        ),
    )
    _, token = authorize(database_url, client)
    without = refresh(server, client, token)
    assert without.status_code == 401 and without.json()["error"] == "invalid_client"

    def assertion() -> dict[str, Any]:
        return {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": key.assertion(client.client_id, f"{server.base}/auth/token"),
        }

    form = {"grant_type": "refresh_token", "refresh_token": token, **assertion()}
    response = httpx.post(f"{server.base}/auth/token", data=form)
    assert response.status_code == 200, response.text
