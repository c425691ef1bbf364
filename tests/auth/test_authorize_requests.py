"""GET/POST [base]/auth/authorize refusals, through real HTTP (RFC 6749 §4.1.2.1).

Until client and redirect URI are known to match, errors are pages and never redirects (no
open redirector); after that they go back to the app with its state and without a code.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from authcode_support import REDIRECT, Pkce, authorize_params, public_client, redirect_query

from healthmesh.auth.authcode_settings import AuthCodeSettings, LoginProvider
from healthmesh.auth.clients import Client
from healthmesh.config import Settings

from conftest import ServerThread


@pytest.fixture(scope="module")
def flow_server(database_url: str) -> Iterator[ServerThread]:
    # The login provider is never reached by these tests: every request fails before login.
    settings = Settings(
        database_url=database_url,
        open=True,
        authcode=AuthCodeSettings(login=LoginProvider(issuer="/no-idp", client_id="healthmesh")),
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def browser(flow_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=flow_server.base, timeout=30, follow_redirects=False) as http:
        yield http


@pytest.fixture(scope="module")
def app_client(database_url: str) -> Client:
    return public_client(database_url)


def authorize(browser: httpx.Client, params: dict[str, str]) -> httpx.Response:
    return browser.get("/auth/authorize", params=params)


def assert_error_page(response: httpx.Response) -> None:
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "X-Frame-Options" in response.headers


def test_an_unknown_client_gets_an_error_page_and_no_redirect(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    params = authorize_params(app_client, flow_server.base, Pkce(), client_id="nobody")
    response = authorize(browser, params)
    assert_error_page(response)
    assert "not registered" in response.text


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        REDIRECT + "/more",
        REDIRECT + "?next=https://evil.example",
        REDIRECT.upper(),
        "",
    ],
)
def test_a_redirect_uri_not_registered_exactly_gets_an_error_page_never_a_redirect(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client, redirect_uri: str
) -> None:
    params = authorize_params(app_client, flow_server.base, Pkce(), redirect_uri=redirect_uri)
    response = authorize(browser, params)
    assert_error_page(response)
    assert "evil.example" not in response.headers.get("location", "")


def test_a_missing_redirect_uri_gets_an_error_page(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    params = authorize_params(app_client, flow_server.base, Pkce(), redirect_uri=None)
    assert_error_page(authorize(browser, params))


def test_a_disabled_client_gets_an_error_page(
    browser: httpx.Client, flow_server: ServerThread, database_url: str
) -> None:
    disabled = public_client(database_url, disabled=True)
    assert_error_page(authorize(browser, authorize_params(disabled, flow_server.base, Pkce())))


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"aud": "https://other.example/fhir"}, "invalid_request"),
        ({"aud": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/*.rs"}, "invalid_scope"),
        ({"scope": "patient/Observation.cruds"}, "invalid_scope"),  # beyond the client's .rs
        ({"scope": None}, "invalid_scope"),
        ({"launch": "no-such-launch"}, "invalid_request"),
    ],
)
def test_a_bad_request_from_a_known_client_redirects_back_with_an_error_and_state_and_no_code(
    browser: httpx.Client,
    flow_server: ServerThread,
    app_client: Client,
    override: dict[str, str | None],
    error: str,
) -> None:
    params = authorize_params(app_client, flow_server.base, Pkce(), **override)
    response = authorize(browser, params)
    assert response.headers["location"].startswith(REDIRECT + "?")
    query = redirect_query(response)
    assert query["error"] == error
    assert query["state"] == params["state"]
    assert "code" not in query
    assert query["error_description"]


def test_a_missing_state_is_refused_without_a_code(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    params = authorize_params(app_client, flow_server.base, Pkce(), state=None)
    query = redirect_query(authorize(browser, params))
    assert query["error"] == "invalid_request"
    assert "code" not in query and "state" not in query


def test_a_repeated_parameter_is_refused(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    params: list[tuple[str, str | int | float | bool | None]] = list(
        authorize_params(app_client, flow_server.base, Pkce()).items()
    )
    params.append(("scope", "patient/*.rs"))
    query = redirect_query(browser.get("/auth/authorize", params=params))
    assert query["error"] == "invalid_request"
    assert "scope" in query["error_description"]


def test_the_same_checks_apply_to_a_posted_authorization_request(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    evil = authorize_params(
        app_client, flow_server.base, Pkce(), redirect_uri="https://evil.example/cb"
    )
    assert_error_page(browser.post("/auth/authorize", data=evil))
    plain = authorize_params(app_client, flow_server.base, Pkce(), code_challenge_method="plain")
    assert redirect_query(browser.post("/auth/authorize", data=plain))["error"] == "invalid_request"


def test_a_good_request_with_an_unreachable_identity_provider_shows_a_page(
    browser: httpx.Client, flow_server: ServerThread, app_client: Client
) -> None:
    response = authorize(browser, authorize_params(app_client, flow_server.base, Pkce()))
    assert response.status_code == 502
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/auth/authorize"),
        ("POST", "/auth/callback"),
        ("GET", "/auth/register"),
        ("DELETE", "/auth/launch"),
        ("PATCH", "/auth/consent"),
    ],
)
def test_other_methods_on_the_flow_endpoints_are_405_not_fhir(
    browser: httpx.Client, method: str, path: str
) -> None:
    response = browser.request(method, path)
    assert response.status_code == 405
    assert "Allow" in response.headers
