"""Clients: what may be registered, keys by jwks_uri (cached, refetched sparingly), the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_support import AppKey, backend_client, client_credentials_form, register, with_auth

from healthmesh.auth.clients import Client, ClientError, ClientKeys
from healthmesh.auth.server import AuthServer

from conftest import ServerThread

HM = [sys.executable, "-m", "healthmesh"]


def _confidential(**values: Any) -> Client:
    base: dict[str, Any] = {
        "client_id": "c1",
        "name": "C",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": AppKey().jwks,
        "grant_types": ("client_credentials",),
    }
    base.update(values)
    return Client(**base)


@pytest.mark.parametrize(
    ("client", "complaint"),
    [
        (_confidential(client_id="has space"), "client_id"),
        (_confidential(name=" "), "name"),
        (
            _confidential(token_endpoint_auth_method="client_secret_basic"),
            "token_endpoint_auth_method",
        ),
        (_confidential(jwks=None), "exactly one"),
        (_confidential(jwks_uri="https://app.example/jwks.json"), "exactly one"),
        (_confidential(jwks=None, jwks_uri="http://app.example/jwks.json"), "https"),
        (_confidential(jwks={"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}), "kid"),
        (_confidential(jwks={"keys": []}), "non-empty"),
        (_confidential(grant_types=("password",)), "unsupported"),
        (
            Client(client_id="p", name="P", jwks=AppKey().jwks, redirect_uris=("https://a/cb",)),
            "public clients have no keys",
        ),
        (
            Client(client_id="p", name="P", grant_types=("client_credentials",)),
            "confidential",
        ),
        (Client(client_id="p", name="P"), "redirect_uri"),
    ],
)
def test_inconsistent_client_metadata_is_refused(client: Client, complaint: str) -> None:
    with pytest.raises(ClientError, match=complaint):
        client.check()


def test_a_jwks_holding_a_private_key_is_refused() -> None:
    key = AppKey()
    private = {"keys": [{**key.key.as_dict(private=True), "kid": key.kid}]}
    with pytest.raises(ClientError, match="public keys only"):
        _confidential(jwks=private).check()


def test_clients_are_stored_listed_and_disabled(database_url: str) -> None:
    client = backend_client(database_url, AppKey(), software_id="sw-1", organization_id="org-1")

    async def body(auth: AuthServer) -> tuple[Client | None, list[str], Client | None, bool]:
        stored = await auth.clients.get(client.client_id)
        listed = [c.client_id for c in await auth.clients.list()]
        assert await auth.clients.set_disabled(client.client_id)
        return (
            stored,
            listed,
            await auth.clients.get(client.client_id),
            await auth.clients.set_disabled("nobody"),
        )

    stored, listed, disabled, missing = with_auth(database_url, body)
    assert stored == client
    assert client.client_id in listed
    assert disabled is not None and disabled.disabled
    assert missing is False


def test_a_client_id_cannot_be_registered_twice(database_url: str) -> None:
    client = backend_client(database_url, AppKey())
    with pytest.raises(ClientError, match="already registered"):
        register(database_url, client)


class JwksHost:
    """A client's web server publishing its JWKS, counting how often it is fetched."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.hits += 1
                body = json.dumps(host.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_host() -> Iterator[JwksHost]:
    host = JwksHost()
    yield host
    host.close()


def _jwks_uri_client(database_url: str, host: JwksHost) -> Client:
    return backend_client(database_url, AppKey(), jwks=None, jwks_uri=host.url)


def test_keys_from_a_jwks_uri_are_fetched_once_and_cached(
    database_url: str, jwks_host: JwksHost
) -> None:
    key = AppKey()
    jwks_host.jwks = key.jwks
    client = _jwks_uri_client(database_url, jwks_host)

    async def body(auth: AuthServer) -> list[bool]:
        keys = ClientKeys(cache_seconds=300, refetch_interval=300)
        try:
            return [await keys.key_for(client, key.kid) is not None for _ in range(5)]
        finally:
            await keys.close()

    assert with_auth(database_url, body) == [True] * 5
    assert jwks_host.hits == 1


def test_an_unknown_kid_refetches_a_rotated_jwks_but_not_more_often_than_allowed(
    database_url: str, jwks_host: JwksHost
) -> None:
    old, new = AppKey(), AppKey()
    jwks_host.jwks = old.jwks
    client = _jwks_uri_client(database_url, jwks_host)

    async def body(auth: AuthServer) -> tuple[bool, bool, int, bool, int]:
        sparing = ClientKeys(cache_seconds=300, refetch_interval=300)
        eager = ClientKeys(cache_seconds=300, refetch_interval=0)
        try:
            had_old = await sparing.key_for(client, old.kid) is not None
            jwks_host.jwks = {"keys": old.jwks["keys"] + new.jwks["keys"]}  # the client rotates
            # Within the refetch interval, bogus and new kids alike cause no request.
            for kid in ("bogus-1", "bogus-2", new.kid):
                await sparing.key_for(client, kid)
            sparing_new = await sparing.key_for(client, new.kid) is not None
            hits_sparing = jwks_host.hits
            await eager.key_for(client, old.kid)
            eager_new = await eager.key_for(client, new.kid) is not None
            return had_old, sparing_new, hits_sparing, eager_new, jwks_host.hits
        finally:
            await sparing.close()
            await eager.close()

    had_old, sparing_new, hits_sparing, eager_new, hits = with_auth(database_url, body)
    assert had_old and not sparing_new and hits_sparing == 1
    assert eager_new and hits == 2  # the eager one fetched once, the new kid was already there


def test_a_backend_client_with_a_jwks_uri_authenticates_over_http(
    server: ServerThread, database_url: str, jwks_host: JwksHost
) -> None:
    key = AppKey("ES384")
    jwks_host.jwks = key.jwks
    client = _jwks_uri_client(database_url, jwks_host)
    form = client_credentials_form(client, key, server.base)
    response = httpx.post(f"{server.base}/auth/token", data=form)
    assert response.status_code == 200, response.text


def test_an_unreachable_jwks_uri_means_invalid_client(
    server: ServerThread, database_url: str
) -> None:
    key = AppKey()
    client = backend_client(database_url, key, jwks=None, jwks_uri="http://127.0.0.1:9/jwks.json")
    response = httpx.post(
        f"{server.base}/auth/token", data=client_credentials_form(client, key, server.base)
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def _hm(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HM, *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_registers_lists_and_disables_clients_and_mints_tokens(
    server: ServerThread, database_url: str, tmp_path: Path
) -> None:
    key = AppKey()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(key.jwks))
    added = _hm(
        database_url,
        "clients", "add", "--name", "Script", "--jwks-file", str(jwks),
        "--scope", "system/*.rs patient/*.rs",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    client_id = added.stdout.strip()
    assert client_id and "\n" not in client_id

    listed = _hm(database_url, "clients", "list")
    assert listed.returncode == 0 and client_id in listed.stdout

    minted = _hm(
        database_url, "token", "--client", client_id, "--scope", "patient/Observation.rs",
        "--patient", "p-42", "--base-url", server.base,
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2 and minted.stdout == token + "\n"  # only the token

    async def verify(auth: AuthServer) -> tuple[str | None, str]:
        grant = await auth.verifier.verify(token, audience=server.base)
        return grant.patient, grant.scope

    assert with_auth(database_url, verify) == ("p-42", "patient/Observation.rs")

    escalated = _hm(
        database_url, "token", "--client", client_id, "--scope", "system/*.cruds",
        "--base-url", server.base,
    )  # fmt: skip
    assert escalated.returncode == 2 and escalated.stdout == ""

    disabled = _hm(database_url, "clients", "disable", client_id)
    assert disabled.returncode == 0
    refused = _hm(
        database_url, "token", "--client", client_id, "--scope", "system/*.rs",
        "--base-url", server.base,
    )  # fmt: skip
    assert refused.returncode == 2 and refused.stdout == ""
