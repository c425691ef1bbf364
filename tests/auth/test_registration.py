"""Dynamic registration (RFC 7591) with software statements from a trusted app library."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from authcode_support import Library, app_keys
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from healthmesh.auth.app_libraries import LibraryKeys
from healthmesh.auth.authcode_settings import AuthCodeSettings
from healthmesh.auth.pkce import s256
from healthmesh.auth.registration import (
    AppLibrary,
    ClientMetadata,
    RegistrationRefused,
    client_metadata,
    library_for,
    statement_issuer,
)
from healthmesh.config import Settings

from conftest import ServerThread


def verify(library: Library, body: dict[str, Any]) -> ClientMetadata:
    issuer = statement_issuer(body)
    return client_metadata(body, library_for(issuer, [library.config()]), library.keys)


def refusal(library: Library, body: dict[str, Any]) -> RegistrationRefused:
    with pytest.raises(RegistrationRefused) as caught:
        verify(library, body)
    return caught.value


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_an_active_app_signed_by_the_library_becomes_client_metadata(alg: str) -> None:
    library = Library(alg=alg)
    claims = library.claims()
    metadata = verify(library, {"software_statement": library.sign(claims)})
    assert metadata.software_id == claims["software_id"]
    assert metadata.redirect_uris == ("https://app.example/callback",)
    assert metadata.token_endpoint_auth_method == "private_key_jwt"
    assert not metadata.public
    assert metadata.jwks == claims["jwks"]
    assert metadata.library == library.issuer


def test_a_public_client_registers_with_auth_method_none() -> None:
    library = Library()
    metadata = verify(
        library, {"software_statement": library.statement(token_endpoint_auth_method="none")}
    )
    assert metadata.public


def test_statement_values_win_over_plain_json_values() -> None:
    library = Library()
    body = {
        "software_statement": library.statement(),
        "redirect_uris": ["https://attacker.example/cb"],
        "client_name": "Something Else",
    }
    metadata = verify(library, body)
    assert metadata.redirect_uris == ("https://app.example/callback",)
    assert metadata.client_name == "Glucose Buddy"


def test_the_response_returns_the_statement_unmodified() -> None:
    library = Library()
    statement = library.statement()
    body = verify(library, {"software_statement": statement}).response("c-1", 1700000000)
    assert body["software_statement"] == statement
    assert body["client_id"] == "c-1"
    assert body["response_types"] == ["code"]


def test_a_missing_statement_is_invalid_software_statement() -> None:
    with pytest.raises(RegistrationRefused) as caught:
        statement_issuer({"redirect_uris": ["https://app.example/cb"]})
    assert caught.value.error == "invalid_software_statement"


def test_a_statement_from_an_untrusted_issuer_is_unapproved() -> None:
    trusted, other = Library(), Library()
    body = {"software_statement": other.statement()}
    with pytest.raises(RegistrationRefused) as caught:
        library_for(statement_issuer(body), [trusted.config()])
    assert caught.value.error == "unapproved_software_statement"


def test_a_statement_signed_by_another_key_claiming_the_issuer_is_refused() -> None:
    trusted = Library()
    forger = Library(issuer=trusted.issuer)
    error = refusal(trusted, {"software_statement": forger.statement()})
    assert error.error == "invalid_software_statement"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def test_an_unsigned_alg_none_statement_is_refused() -> None:
    library = Library()
    error = refusal(library, {"software_statement": _unsigned(library.claims())})
    assert error.error == "invalid_software_statement"


def test_an_hs256_statement_keyed_with_the_public_key_is_refused() -> None:
    library = Library(alg="RS384")
    # Signed by hand: joserfc itself refuses to make an HMAC key of a public key.
    header = _b64(json.dumps({"alg": "HS256", "kid": library.key.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(library.claims()).encode())}"
    secret = library.key.as_pem(private=False)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_b64(mac)}"
    assert refusal(library, {"software_statement": forged}).error == "invalid_software_statement"


def test_an_es256_statement_is_refused_even_when_the_library_publishes_the_key() -> None:
    library = Library()
    key = ECKey.generate_key("P-256", parameters={"kid": "p256"})
    jwks = {"keys": [key.as_dict(private=False)]}
    config = AppLibrary(issuer=library.issuer, jwks=jwks)
    token = jwt.encode({"alg": "ES256", "kid": "p256"}, library.claims(), key, algorithms=["ES256"])
    with pytest.raises(RegistrationRefused) as caught:
        client_metadata({"software_statement": token}, config, KeySet.import_key_set(jwks))  # type: ignore[arg-type]
    assert caught.value.error == "invalid_software_statement"


def test_an_expired_statement_is_refused() -> None:
    library = Library()
    past = int(time.time()) - 3600
    body = {"software_statement": library.statement(iat=past - 600, exp=past)}
    assert refusal(library, body).error == "invalid_software_statement"


@pytest.mark.parametrize("status", ["inactive", "suspended", None])
def test_an_app_not_active_in_the_library_is_unapproved(status: str | None) -> None:
    library = Library()
    extensions = {"cms_app": {"library_status": status}} if status else {"cms_app": {}}
    body = {"software_statement": library.statement(extensions=extensions)}
    assert refusal(library, body).error == "unapproved_software_statement"


def test_a_statement_without_software_id_is_refused() -> None:
    library = Library()
    claims = library.claims()
    del claims["software_id"]
    body = {"software_statement": library.sign(claims)}
    assert refusal(library, body).error == "invalid_software_statement"


def test_a_statement_without_any_keys_is_refused() -> None:
    library = Library()
    claims = library.claims()
    del claims["jwks"]
    assert refusal(library, {"software_statement": library.sign(claims)}).error == (
        "invalid_software_statement"
    )


def test_private_keys_in_jwks_are_refused() -> None:
    library = Library()
    key, _ = app_keys()
    body = {"software_statement": library.statement(jwks={"keys": [key.as_dict(private=True)]})}
    assert refusal(library, body).error == "invalid_client_metadata"


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example/callback",
        "https://app.example/callback#frag",
        "javascript:alert(1)",
        "",
    ],
)
def test_unsafe_redirect_uris_are_invalid_redirect_uri(uri: str) -> None:
    library = Library()
    body = {"software_statement": library.statement(redirect_uris=[uri])}
    assert refusal(library, body).error == "invalid_redirect_uri"


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:7000/cb", "http://localhost/cb", "com.example.app:/oauth2"]
)
def test_loopback_and_private_use_redirects_of_native_apps_are_accepted(uri: str) -> None:
    library = Library()
    metadata = verify(library, {"software_statement": library.statement(redirect_uris=[uri])})
    assert metadata.redirect_uris == (uri,)


def test_an_authorization_code_client_needs_redirect_uris() -> None:
    library = Library()
    body = {"software_statement": library.statement(redirect_uris=[])}
    assert refusal(library, body).error == "invalid_redirect_uri"


@pytest.mark.parametrize(
    "claims",
    [
        {"token_endpoint_auth_method": "client_secret_basic"},
        {"grant_types": ["implicit"]},
        {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"},
        {"response_types": ["token"]},
        {"jwks_uri": "http://app.example/jwks", "jwks": None},
    ],
)
def test_unsupported_metadata_is_invalid_client_metadata(claims: dict[str, Any]) -> None:
    library = Library()
    body = {"software_statement": library.statement(**claims)}
    assert refusal(library, body).error == "invalid_client_metadata"


# -- POST [base]/auth/register through real HTTP ---------------------------------------------


@pytest.fixture(scope="module")
def library() -> Library:
    return Library()


@pytest.fixture(scope="module")
def registry(database_url: str, library: Library) -> Iterator[ServerThread]:
    settings = Settings(
        database_url=database_url,
        open=True,
        test_identity_provider=True,
        authcode=AuthCodeSettings(app_libraries=(library.config(),)),
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def http(registry: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.base, timeout=30, follow_redirects=False) as c:
        yield c


def test_a_registered_app_gets_201_with_a_client_id_and_can_start_the_flow(
    http: httpx.Client, library: Library, registry: ServerThread
) -> None:
    statement = library.statement(token_endpoint_auth_method="none")
    response = http.post("/auth/register", json={"software_statement": statement})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_id"]
    assert body["software_statement"] == statement
    assert body["token_endpoint_auth_method"] == "none"
    assert body["redirect_uris"] == ["https://app.example/callback"]
    assert response.headers["cache-control"] == "no-store"

    params = {
        "response_type": "code",
        "client_id": body["client_id"],
        "redirect_uri": "https://app.example/callback",
        "scope": "openid fhirUser patient/*.rs",
        "state": "s1",
        "aud": registry.base,
        "code_challenge": s256("v" * 43),
        "code_challenge_method": "S256",
    }
    started = http.get("/auth/authorize", params=params)
    assert started.status_code == 303
    assert "/idp/" in started.headers["location"]  # on to the login, not back with an error


def test_a_confidential_app_registers_with_its_keys(http: httpx.Client, library: Library) -> None:
    _, jwks = app_keys()
    response = http.post(
        "/auth/register", json={"software_statement": library.statement(jwks=jwks)}
    )
    assert response.status_code == 201, response.text
    assert response.json()["jwks"] == jwks
    assert response.json()["token_endpoint_auth_method"] == "private_key_jwt"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid_software_statement"),
        ({"software_statement": "not-a-jwt"}, "invalid_software_statement"),
        ({"software_statement": Library().statement()}, "unapproved_software_statement"),
    ],
    ids=["missing", "garbage", "untrusted-library"],
)
def test_registration_refusals_are_rfc7591_errors(
    http: httpx.Client, body: dict[str, Any], error: str
) -> None:
    response = http.post("/auth/register", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_a_registration_with_a_bad_redirect_uri_is_invalid_redirect_uri(
    http: httpx.Client, library: Library
) -> None:
    statement = library.statement(redirect_uris=["http://app.example/cb"])
    response = http.post("/auth/register", json={"software_statement": statement})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def test_a_registration_that_is_not_json_is_invalid_client_metadata(http: httpx.Client) -> None:
    response = http.post(
        "/auth/register",
        content=b"software_statement=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_a_library_publishing_its_keys_at_a_jwks_uri_is_fetched_once_and_cached() -> None:
    library = Library(alg="RS384")
    served: list[str] = []
    document = json.dumps(library.jwks).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    config = AppLibrary(issuer=library.issuer, jwks_uri=f"http://127.0.0.1:{host.server_port}/jwks")

    async def twice() -> list[str]:
        keys = LibraryKeys()
        try:
            found = []
            for _ in range(2):
                body = {"software_statement": library.statement()}
                found.append(client_metadata(body, config, await keys.keys(config)).library)
            return found
        finally:
            await keys.close()

    try:
        assert asyncio.run(twice()) == [library.issuer, library.issuer]
    finally:
        host.shutdown()
        host.server_close()
    assert served == ["/jwks"]
