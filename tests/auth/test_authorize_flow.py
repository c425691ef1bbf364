"""The SMART authorization-code flow end to end, through real HTTP: the app's authorize
request, login at the built-in test identity provider (password + TOTP, OIDC), consent,
and the code exchanged at the token endpoint."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from auth_support import AppKey, with_auth
from authcode_support import (
    Browser,
    Person,
    Pkce,
    authorize_params,
    exchange,
    person,
    public_client,
    redirect_query,
)
from joserfc import jwt
from joserfc.jwk import KeySet

from healthmesh.auth.assertions import ASSERTION_TYPE
from healthmesh.auth.clients import Client
from healthmesh.auth.grant import AccessGrant, InvalidToken
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings

from conftest import ServerThread


@pytest.fixture(scope="module")
def flow_server(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(database_url=database_url, open=True, test_identity_provider=True)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def base(flow_server: ServerThread) -> str:
    return flow_server.base


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as c:
        yield c


@pytest.fixture
def browser(base: str) -> Iterator[Browser]:
    with Browser(base) as b:
        yield b


@pytest.fixture
def app(database_url: str) -> Client:
    return public_client(database_url)


@pytest.fixture
def someone(database_url: str, http: httpx.Client) -> Person:
    return person(database_url, http)


def jwks_of(http: httpx.Client) -> KeySet:
    return KeySet.import_key_set(http.get("/.well-known/jwks.json").json())


def verify(database_url: str, token: str, base: str) -> AccessGrant:
    async def body(auth: AuthServer) -> AccessGrant:
        return await auth.verifier.verify(token, audience=base)

    return with_auth(database_url, body)


def tokens(
    browser: Browser, http: httpx.Client, app: Client, who: Person, **params: str | None
) -> dict[str, Any]:
    pkce = Pkce()
    request = authorize_params(app, browser.base, pkce, **params)
    code = browser.code_for(request, who)
    response = exchange(http, browser.base, app, code, pkce)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_patient_signs_in_approves_and_the_app_gets_a_token_for_that_patient(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    pkce = Pkce()
    params = authorize_params(
        app,
        browser.base,
        pkce,
        scope="openid fhirUser launch/patient patient/Observation.rs offline_access",
        nonce="n-0S6_WzA2Mj",
    )
    code = browser.code_for(params, someone)
    response = exchange(http, browser.base, app, code, pkce)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600
    assert body["patient"] == someone.patient_id
    assert set(body["scope"].split()) == {
        "openid",
        "fhirUser",
        "launch/patient",
        "patient/Observation.rs",
        "offline_access",
    }
    assert body["refresh_token"]

    grant = verify(database_url, body["access_token"], browser.base)
    assert grant.patient == someone.patient_id
    assert grant.fhir_user == f"Patient/{someone.patient_id}"
    assert grant.client_id == app.client_id

    id_token = jwt.decode(body["id_token"], jwks_of(http), algorithms=["RS256"]).claims
    assert id_token["aud"] == app.client_id
    assert id_token["iss"] == browser.base
    assert id_token["fhirUser"].endswith(f"Patient/{someone.patient_id}")
    assert id_token["nonce"] == "n-0S6_WzA2Mj"


def test_without_openid_fhiruser_there_is_no_id_token_and_without_offline_access_no_refresh(
    browser: Browser, http: httpx.Client, app: Client, someone: Person
) -> None:
    body = tokens(browser, http, app, someone, scope="launch/patient patient/Observation.rs")
    assert "id_token" not in body
    assert "refresh_token" not in body
    assert body["patient"] == someone.patient_id


def test_the_consent_page_lists_each_scope_in_plain_words_with_the_app_name(
    browser: Browser, app: Client, someone: Person
) -> None:
    params = authorize_params(
        app, browser.base, Pkce(), scope="openid fhirUser patient/Observation.rs"
    )
    form = browser.consent(browser.login(browser.authorize(params), someone))
    assert form.scopes == ["openid", "fhirUser", "patient/Observation.rs"]
    assert app.name in form.page
    assert f"signed in as {someone.name}" in form.page
    assert "See your observations" in form.page
    assert 'type="checkbox"' in form.page and "<label" in form.page
    assert 'lang="en"' in form.page


def test_unticked_scopes_are_not_granted(
    browser: Browser, http: httpx.Client, app: Client, someone: Person
) -> None:
    pkce = Pkce()
    params = authorize_params(
        app,
        browser.base,
        pkce,
        scope="launch/patient patient/Observation.rs patient/Condition.rs",
    )
    code = browser.code_for(params, someone, scopes=["launch/patient", "patient/Condition.rs"])
    body = exchange(http, browser.base, app, code, pkce).json()
    assert body["scope"].split() == ["launch/patient", "patient/Condition.rs"]


def test_a_scope_added_to_the_consent_form_is_not_granted(
    browser: Browser, http: httpx.Client, app: Client, someone: Person
) -> None:
    pkce = Pkce()
    params = authorize_params(app, browser.base, pkce, scope="launch/patient patient/Condition.rs")
    form = browser.consent(browser.login(browser.authorize(params), someone))
    code = redirect_query(browser.decide(form, scopes=[*form.scopes, "patient/*.cruds"]))["code"]
    body = exchange(http, browser.base, app, code, pkce).json()
    assert body["scope"].split() == ["launch/patient", "patient/Condition.rs"]


def test_deny_sends_access_denied_with_the_state_and_no_code(
    browser: Browser, app: Client, someone: Person
) -> None:
    params = authorize_params(app, browser.base, Pkce())
    form = browser.consent(browser.login(browser.authorize(params), someone))
    query = redirect_query(browser.decide(form, approve=False))
    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert "code" not in query


def _consent_form(browser: Browser, app: Client, who: Person) -> Any:
    params = authorize_params(app, browser.base, Pkce())
    return params, browser.consent(browser.login(browser.authorize(params), who))


@pytest.mark.parametrize("csrf", ["forged-token", ""])
def test_a_consent_post_without_the_right_csrf_token_is_refused_with_no_redirect(
    browser: Browser, app: Client, someone: Person, csrf: str
) -> None:
    params, form = _consent_form(browser, app, someone)
    data = [("request", form.request), ("csrf", csrf), ("decision", "approve")]
    data += [("scope", s) for s in form.scopes]
    refused = browser.http.post(
        form.action,
        content=urllib.parse.urlencode(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 403
    assert "location" not in refused.headers
    # The real form still decides: a forged post does not cancel the person's request.
    assert redirect_query(browser.decide(form))["state"] == params["state"]


def test_a_consent_post_from_another_browser_is_refused_even_with_the_token(
    browser: Browser, base: str, app: Client, someone: Person
) -> None:
    _, form = _consent_form(browser, app, someone)
    with Browser(base) as attacker:
        refused = attacker.decide(form)
    assert refused.status_code == 403
    assert "location" not in refused.headers


def test_a_consent_form_decides_once(browser: Browser, app: Client, someone: Person) -> None:
    _, form = _consent_form(browser, app, someone)
    assert "code" in redirect_query(browser.decide(form))
    replay = browser.decide(form)
    assert replay.status_code == 403
    assert "location" not in replay.headers


def test_showing_the_consent_page_again_retires_the_earlier_csrf_token(
    browser: Browser, app: Client, someone: Person
) -> None:
    _, form = _consent_form(browser, app, someone)
    again = browser.http.get(f"{browser.base}/auth/consent", params={"request": form.request})
    assert again.status_code == 200
    assert browser.decide(form).status_code == 403


def test_a_login_callback_opened_in_another_browser_is_refused(
    browser: Browser, base: str, app: Client, someone: Person, database_url: str, http: httpx.Client
) -> None:
    """Login CSRF: an attacker signs in as themself and sends the callback link to a victim,
    whose browser must not complete the attacker's login (and hand the app their session)."""
    callback = browser.sign_in_at_idp(
        browser.authorize(authorize_params(app, base, Pkce())), someone
    )
    with Browser(base) as victim:
        # The victim's browser has its own flow cookie, just not the attacker's.
        victim.sign_in_at_idp(
            victim.authorize(authorize_params(app, base, Pkce())), person(database_url, http)
        )
        response = victim.http.get(callback)
    assert response.status_code == 400
    assert "another browser" in response.text
    assert "location" not in response.headers
    # The attacker's request is gone too: the link cannot be used again anywhere.
    assert browser.http.get(callback).status_code == 400


def test_the_callback_refuses_a_browser_without_the_cookie_that_started_the_flow(
    browser: Browser, base: str, app: Client, someone: Person
) -> None:
    at_idp = browser.authorize(authorize_params(app, base, Pkce()))
    browser.http.cookies.clear()  # the callback arrives without the flow's browser cookie
    response = browser.login(at_idp, someone)
    assert response.status_code == 400
    assert "another browser" in response.text
    assert "location" not in response.headers


# -- the token endpoint's authorization_code grant ---------------------------------------------


def _code(browser: Browser, app: Client, who: Person, pkce: Pkce, **params: str | None) -> str:
    return browser.code_for(authorize_params(app, browser.base, pkce, **params), who)


@pytest.mark.parametrize(
    "verifier",
    [None, "", "wrong-" + "v" * 43, "plain"],
    ids=["missing", "blank", "wrong", "plain-challenge-as-verifier"],
)
def test_a_code_without_the_right_pkce_verifier_gets_invalid_grant_and_no_token(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, verifier: str | None
) -> None:
    pkce = Pkce()
    code = _code(browser, app, someone, pkce)
    if verifier == "plain":
        verifier = pkce.challenge  # what a "plain" client would send
    response = exchange(http, browser.base, app, code, pkce, code_verifier=verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "access_token" not in response.text


@pytest.mark.parametrize("redirect_uri", ["https://app.example/other", None])
def test_a_redirect_uri_differing_from_the_authorize_request_gets_invalid_grant(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, redirect_uri: str | None
) -> None:
    pkce = Pkce()
    code = _code(browser, app, someone, pkce)
    response = exchange(http, browser.base, app, code, pkce, redirect_uri=redirect_uri)
    assert response.json()["error"] == "invalid_grant"


def test_a_code_presented_by_another_client_gets_invalid_grant(
    browser: Browser,
    http: httpx.Client,
    app: Client,
    someone: Person,
    database_url: str,
) -> None:
    other = public_client(database_url)
    pkce = Pkce()
    code = _code(browser, app, someone, pkce)
    response = exchange(http, browser.base, other, code, pkce, redirect_uri=app.redirect_uris[0])
    assert response.json()["error"] == "invalid_grant"


def test_an_unknown_code_gets_invalid_grant(http: httpx.Client, base: str, app: Client) -> None:
    response = exchange(http, base, app, "never-issued", Pkce())
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_a_reused_code_gets_invalid_grant_and_revokes_the_tokens_issued_from_it(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    pkce = Pkce()
    code = _code(browser, app, someone, pkce, scope="launch/patient patient/*.rs offline_access")
    first = exchange(http, browser.base, app, code, pkce).json()
    assert verify(database_url, first["access_token"], browser.base).patient == someone.patient_id

    second = exchange(http, browser.base, app, code, pkce)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken):
        verify(database_url, first["access_token"], browser.base)
    refreshed = http.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": app.client_id,
        },
    )
    assert refreshed.json()["error"] == "invalid_grant"


def test_the_refresh_token_from_a_code_works_and_keeps_the_patient(
    browser: Browser, http: httpx.Client, app: Client, someone: Person
) -> None:
    body = tokens(browser, http, app, someone, scope="launch/patient patient/*.rs offline_access")
    refreshed = http.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": app.client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["patient"] == someone.patient_id


def test_a_confidential_client_exchanges_its_code_with_private_key_jwt(
    browser: Browser, http: httpx.Client, someone: Person, database_url: str
) -> None:
    key = AppKey("ES384")
    confidential = public_client(
        database_url, token_endpoint_auth_method="private_key_jwt", jwks=key.jwks
    )
    pkce = Pkce()
    code = _code(browser, confidential, someone, pkce)
    assertion = key.assertion(confidential.client_id, f"{browser.base}/auth/token")
    without = exchange(http, browser.base, confidential, code, pkce)
    assert without.status_code == 401  # invalid_client: it must authenticate
    code = _code(browser, confidential, person(database_url, http), pkce)
    response = exchange(
        http,
        browser.base,
        confidential,
        code,
        pkce,
        client_id=None,
        client_assertion_type=ASSERTION_TYPE,
        client_assertion=assertion,
    )
    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


# -- identity: exactly one Patient, or a refusal page -----------------------------------------


def test_a_login_matching_no_patient_gets_a_refusal_page_and_no_code(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    # The Patient disappears after the account was made: the identity now matches no one.
    assert http.delete(f"/Patient/{someone.patient_id}").status_code in (200, 204)
    at_idp = browser.authorize(authorize_params(app, browser.base, Pkce()))
    response = browser.login(at_idp, someone)
    assert response.status_code == 403
    assert "location" not in response.headers
    assert "does not match exactly one patient" in response.text


def test_a_login_matching_two_patients_gets_a_refusal_page(
    browser: Browser, http: httpx.Client, app: Client, someone: Person
) -> None:
    original = http.get(f"/Patient/{someone.patient_id}").json()
    twin = {k: v for k, v in original.items() if k not in ("id", "meta")}
    created = http.post("/Patient", json=twin, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201
    at_idp = browser.authorize(authorize_params(app, browser.base, Pkce()))
    response = browser.login(at_idp, someone)
    assert response.status_code == 403
    assert "location" not in response.headers


# -- EHR launch -----------------------------------------------------------------------------


def _operator_token(http: httpx.Client, base: str, database_url: str) -> str:
    from auth_support import backend_client, client_credentials_form

    key = AppKey()
    operator = backend_client(database_url, key, scope="system/Patient.rs")
    form = client_credentials_form(operator, key, base, scope="system/Patient.rs")
    response = http.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_an_ehr_launch_carries_its_patient_into_the_token(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    token = _operator_token(http, browser.base, database_url)
    minted = http.post(
        "/auth/launch",
        json={"patient": someone.patient_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert minted.status_code == 201, minted.text
    body = tokens(
        browser, http, app, someone, launch=minted.json()["launch"], scope="launch patient/*.rs"
    )
    assert body["patient"] == someone.patient_id


def test_an_ehr_launch_for_another_patient_refuses_the_login(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    other = person(database_url, http)
    token = _operator_token(http, browser.base, database_url)
    launch = http.post(
        "/auth/launch",
        json={"patient": other.patient_id},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["launch"]
    params = authorize_params(app, browser.base, Pkce(), launch=launch, scope="launch patient/*.rs")
    response = browser.login(browser.authorize(params), someone)
    assert response.status_code == 403
    assert "location" not in response.headers


def test_minting_a_launch_needs_an_operator_token(
    http: httpx.Client, someone: Person, browser: Browser, database_url: str
) -> None:
    anonymous = http.post("/auth/launch", json={"patient": someone.patient_id})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_token"
    patient_app_token = tokens(
        browser, http, public_client(database_url), someone, scope="patient/*.rs"
    )["access_token"]
    refused = http.post(
        "/auth/launch",
        json={"patient": someone.patient_id},
        headers={"Authorization": f"Bearer {patient_app_token}"},
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"


def test_a_launch_minted_by_the_cli_carries_its_patient(
    browser: Browser, http: httpx.Client, app: Client, someone: Person, database_url: str
) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "healthmesh", "launch", "--patient", someone.patient_id],
        env={**os.environ, "HEALTHMESH_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert minted.returncode == 0, minted.stderr
    launch = minted.stdout.strip()
    body = tokens(browser, http, app, someone, launch=launch, scope="launch patient/*.rs")
    assert body["patient"] == someone.patient_id


def test_the_cli_refuses_a_launch_for_an_unknown_patient(database_url: str) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "healthmesh", "launch", "--patient", "no-such-patient"],
        env={**os.environ, "HEALTHMESH_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert minted.returncode == 2
    assert minted.stdout == ""


def test_no_code_token_or_cookie_reaches_the_server_logs(
    browser: Browser,
    http: httpx.Client,
    app: Client,
    someone: Person,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pkce = Pkce()
    params = authorize_params(app, browser.base, pkce, scope="openid fhirUser offline_access")
    code = browser.code_for(params, someone)
    body = exchange(http, browser.base, app, code, pkce).json()
    exchange(http, browser.base, app, code, pkce)  # the reuse is logged: without the code
    secrets_seen = [code, body["access_token"], body["refresh_token"], body["id_token"]]
    secrets_seen += [c.value for c in browser.http.cookies.jar if c.value]
    server_lines = [
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    ]
    assert any("presented again" in line for line in server_lines)
    for line in server_lines:
        for secret in secrets_seen:
            assert secret not in line


def test_discovery_advertises_the_authorization_code_flow(http: httpx.Client, base: str) -> None:
    smart = http.get("/.well-known/smart-configuration").json()
    assert "authorization_code" in smart["grant_types_supported"]
    assert smart["authorization_endpoint"] == f"{base}/auth/authorize"
    assert smart["registration_endpoint"] == f"{base}/auth/register"
    assert smart["code_challenge_methods_supported"] == ["S256"]
    # The advertised endpoints are served (a refusal page, not a 404 or the FHIR API).
    assert http.get(smart["authorization_endpoint"]).status_code == 400


def test_discovery_claims_the_capabilities_this_flow_serves(http: httpx.Client) -> None:
    capabilities = http.get("/.well-known/smart-configuration").json()["capabilities"]
    for served in ("launch-standalone", "launch-ehr", "authorize-post", "sso-openid-connect"):
        assert served in capabilities
