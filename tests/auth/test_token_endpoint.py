"""The token endpoint over real HTTP: client authentication attacks, grant dispatch, scopes,
SMART Backend Services with hl7-b2b, cms_smart patient access, errors, headers, CORS, logs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from auth_support import (
    AppKey,
    auth_of,
    backend_client,
    client_credentials_form,
    forged,
    hs256_with,
    public_client,
    with_auth,
)
from joserfc import jwt
from joserfc.jwk import RSAKey

from healthmesh.auth.assertions import ASSERTION_TYPE
from healthmesh.auth.cms_smart import IdentityRefused
from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings

from conftest import ServerThread


def _post(server: ServerThread, form: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base}/auth/token", data=form)


def _verify(database_url: str, token: str, audience: str) -> AccessGrant:
    async def body(auth: AuthServer) -> AccessGrant:
        return await auth.verifier.verify(token, audience=audience)

    return with_auth(database_url, body)


@pytest.fixture
def backend(database_url: str) -> tuple[Any, AppKey]:
    key = AppKey()
    return backend_client(database_url, key), key


def _refusal(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    return str(body["error_description"])


# --- client assertion attacks (all: 401 invalid_client) -------------------------------------


def _assert_form(
    client_id: str, assertion: str, scope: str = "system/Observation.rs"
) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }


def _claims(client_id: str, aud: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + 240,
        "iat": now,
        "jti": uuid.uuid4().hex,
        **extra,
    }


def test_an_unsigned_assertion_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    assertion = forged({"alg": "RS384", "kid": key.kid}, _claims(client.client_id, token_url))
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "signature" in _refusal(response, 401, "invalid_client")


def test_an_alg_none_assertion_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    assertion = forged({"alg": "none", "kid": key.kid}, _claims(client.client_id, token_url))
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "RS384" in _refusal(response, 401, "invalid_client")


def test_an_hs256_assertion_keyed_with_the_clients_public_key_is_refused(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    secret = key.key.as_pem(private=False)
    assertion = hs256_with(secret, {"kid": key.kid}, _claims(client.client_id, token_url))
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "RS384" in _refusal(response, 401, "invalid_client")


def test_an_rs256_assertion_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    assertion = jwt.encode(
        {"alg": "RS256", "kid": key.kid}, _claims(client.client_id, token_url), key.key
    )
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "RS384" in _refusal(response, 401, "invalid_client")


def test_an_assertion_without_kid_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    assertion = jwt.encode(
        {"alg": "RS384"}, _claims(client.client_id, token_url), key.key, algorithms=["RS384"]
    )
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "kid" in _refusal(response, 401, "invalid_client")


def test_an_assertion_with_an_unknown_kid_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion"] = key.assertion(
        client.client_id, f"{server.base}/auth/token", header={"kid": "unregistered"}
    )
    assert "kid" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_pointing_jku_at_another_key_set_is_refused(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion"] = key.assertion(
        client.client_id,
        f"{server.base}/auth/token",
        header={"jku": "https://attacker.example/jwks.json"},
    )
    assert "jku" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_signed_by_another_key_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    token_url = f"{server.base}/auth/token"
    other = RSAKey.generate_key(2048, private=True)
    assertion = jwt.encode(
        {"alg": "RS384", "kid": key.kid},
        _claims(client.client_id, token_url),
        other,
        algorithms=["RS384"],
    )
    response = _post(server, _assert_form(client.client_id, assertion))
    assert "signature" in _refusal(response, 401, "invalid_client")


def test_an_assertion_for_another_audience_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion"] = key.assertion(client.client_id, "https://other.example/token")
    assert "aud" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_expired_assertion_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion"] = key.assertion(
        client.client_id, f"{server.base}/auth/token", lifetime=-120
    )
    assert "expired" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_living_longer_than_five_minutes_is_refused(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion"] = key.assertion(
        client.client_id, f"{server.base}/auth/token", lifetime=600
    )
    assert "five minutes" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_not_valid_yet_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base, nbf=int(time.time()) + 200)
    assert "nbf" in _refusal(_post(server, form), 401, "invalid_client")


def test_a_replayed_assertion_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    assert _post(server, form).status_code == 200
    assert "jti" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_without_jti_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base, jti=None)
    assert "jti" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_assertion_whose_iss_is_not_the_client_is_refused(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base, iss="someone-else")
    assert "iss" in _refusal(_post(server, form), 401, "invalid_client")


def test_a_disabled_client_is_refused(server: ServerThread, database_url: str) -> None:
    key = AppKey()
    client = backend_client(database_url, key, disabled=True)
    form = client_credentials_form(client, key, server.base)
    assert "unknown or disabled" in _refusal(_post(server, form), 401, "invalid_client")


def test_an_unknown_client_gets_the_same_answer_as_a_disabled_one(server: ServerThread) -> None:
    key = AppKey()
    assertion = key.assertion("nobody-here", f"{server.base}/auth/token")
    response = _post(server, _assert_form("nobody-here", assertion))
    assert "unknown or disabled" in _refusal(response, 401, "invalid_client")


def test_a_confidential_client_cannot_skip_its_assertion(
    server: ServerThread, backend: Any
) -> None:
    client, _ = backend
    form = {
        "grant_type": "client_credentials",
        "client_id": client.client_id,
        "scope": "system/*.rs",
    }
    assert "private_key_jwt" in _refusal(_post(server, form), 401, "invalid_client")


def test_a_wrong_assertion_type_is_refused(server: ServerThread, backend: Any) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    _refusal(_post(server, form), 401, "invalid_client")


# --- request errors -----------------------------------------------------------------------


def test_an_unsupported_grant_type_is_refused(server: ServerThread) -> None:
    response = _post(server, {"grant_type": "password", "username": "a", "password": "b"})
    _refusal(response, 400, "unsupported_grant_type")


def test_a_missing_grant_type_is_invalid_request(server: ServerThread) -> None:
    _refusal(_post(server, {"scope": "system/*.rs"}), 400, "invalid_request")


def test_a_repeated_parameter_is_invalid_request(server: ServerThread) -> None:
    response = httpx.post(
        f"{server.base}/auth/token",
        content="grant_type=client_credentials&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "more than once" in _refusal(response, 400, "invalid_request")


def test_a_json_body_is_invalid_request(server: ServerThread) -> None:
    response = httpx.post(f"{server.base}/auth/token", json={"grant_type": "client_credentials"})
    _refusal(response, 400, "invalid_request")


def test_a_public_client_may_not_use_client_credentials(
    server: ServerThread, database_url: str
) -> None:
    client = public_client(database_url)
    form = {
        "grant_type": "client_credentials",
        "client_id": client.client_id,
        "scope": "system/*.rs",
    }
    _refusal(_post(server, form), 400, "unauthorized_client")


# --- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "complaint"),
    [
        ("system/*.cruds", "not allowed"),
        ("user/Observation.rs", "only system/"),
        ("openid system/Observation.rs", "only system/"),
    ],
)
def test_backend_scopes_beyond_the_clients_or_outside_system_are_invalid_scope(
    server: ServerThread, backend: Any, scope: str, complaint: str
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base, scope=scope)
    assert complaint in _refusal(_post(server, form), 400, "invalid_scope")


def test_a_backend_request_without_scope_is_invalid_scope(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base)
    del form["scope"]
    _refusal(_post(server, form), 400, "invalid_scope")


def test_a_wildcard_allowance_grants_specific_and_v1_scopes(
    server: ServerThread, backend: Any, database_url: str
) -> None:
    client, key = backend
    scope = "system/Observation.r system/Patient.read system/Condition.rs?clinical-status=active"
    response = _post(server, client_credentials_form(client, key, server.base, scope=scope))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == scope
    assert _verify(database_url, response.json()["access_token"], server.base).scope == scope


# --- hl7-b2b ------------------------------------------------------------------------------


def test_the_hl7_b2b_extension_is_recorded_in_the_grant(
    server: ServerThread, backend: Any, database_url: str
) -> None:
    client, key = backend
    b2b = {
        "hl7-b2b": {
            "version": "1",
            "organization_id": "urn:oid:2.16.840.1.1",
            "purpose_of_use": "TREAT",
        }
    }
    form = client_credentials_form(client, key, server.base, extensions=b2b)
    response = _post(server, form)
    assert response.status_code == 200, response.text
    grant = _verify(database_url, response.json()["access_token"], server.base)
    assert grant.organization == "urn:oid:2.16.840.1.1"
    assert grant.purpose_of_use == "TREAT"
    assert grant.patient is None


def test_an_hl7_b2b_extension_without_organization_is_invalid_request(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(
        client, key, server.base, extensions={"hl7-b2b": {"purpose_of_use": "TREAT"}}
    )
    assert "organization_id" in _refusal(_post(server, form), 400, "invalid_request")


# --- cms_smart ----------------------------------------------------------------------------


class OwnRefusal(Exception):
    """An identity module's own refusal class, with a ``reason`` like IdentityRefused."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class KnownIdTokens:
    """A stand-in PatientIdentifier (the real one verifies IAL2 id_tokens: identity's part)."""

    def __init__(self) -> None:
        self.patients: dict[str, str] = {}
        self.refusals: dict[str, Exception] = {}

    async def patient_for(self, id_token: str) -> str:
        if id_token in self.refusals:
            raise self.refusals[id_token]
        if id_token not in self.patients:
            raise IdentityRefused("no single patient matches the verified identity")
        return self.patients[id_token]


@pytest.fixture(scope="module")
def identity() -> KnownIdTokens:
    return KnownIdTokens()


@pytest.fixture(scope="module")
def cms_server(database_url: str, identity: KnownIdTokens) -> Iterator[ServerThread]:
    running = ServerThread(Settings(database_url=database_url, open=True))
    auth_of(running).patient_identifier = identity
    with running:
        yield running


def _id_token() -> str:
    """An opaque three-part token; the stand-in identifier looks it up as a whole."""
    return forged({"alg": "RS256", "kid": "idp"}, {"sub": uuid.uuid4().hex}, b"sig")


def _cms(id_token: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    value = {"version": "1", "purpose_of_use": "PATRQT", "id_token": id_token, **(overrides or {})}
    return {"cms_smart": {k: v for k, v in value.items() if v is not None}}


def test_cms_smart_issues_a_patient_scoped_token_for_the_identified_patient(
    cms_server: ServerThread, backend: Any, database_url: str, identity: KnownIdTokens
) -> None:
    client, key = backend
    id_token = _id_token()
    identity.patients[id_token] = "pat-77"
    form = client_credentials_form(
        client, key, cms_server.base, scope="patient/*.rs", extensions=_cms(id_token)
    )
    response = _post(cms_server, form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"] == "pat-77"
    assert body["scope"] == "patient/*.rs"
    assert "refresh_token" not in body
    grant = _verify(database_url, body["access_token"], cms_server.base)
    assert (grant.patient, grant.fhir_user, grant.purpose_of_use) == (
        "pat-77",
        "Patient/pat-77",
        "PATRQT",
    )


def test_cms_smart_with_an_unidentifiable_person_is_invalid_grant(
    cms_server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(
        client, key, cms_server.base, scope="patient/*.rs", extensions=_cms(_id_token())
    )
    assert "no single patient" in _refusal(_post(cms_server, form), 400, "invalid_grant")


def test_cms_smart_passes_on_the_reason_of_any_identity_refusal(
    cms_server: ServerThread, backend: Any, identity: KnownIdTokens
) -> None:
    client, key = backend
    id_token = _id_token()
    identity.refusals[id_token] = OwnRefusal("identity assurance level below 2", "ial")
    form = client_credentials_form(
        client, key, cms_server.base, scope="patient/*.rs", extensions=_cms(id_token)
    )
    assert _refusal(_post(cms_server, form), 400, "invalid_grant") == (
        "identity assurance level below 2"
    )


def test_a_failing_identifier_is_a_server_error_not_a_refusal(
    cms_server: ServerThread, backend: Any, identity: KnownIdTokens
) -> None:
    client, key = backend
    id_token = _id_token()
    identity.refusals[id_token] = RuntimeError("the identity provider list could not be read")
    form = client_credentials_form(
        client, key, cms_server.base, scope="patient/*.rs", extensions=_cms(id_token)
    )
    response = _post(cms_server, form)
    assert _refusal(response, 500, "server_error") == "internal error; it has been logged"


def test_cms_smart_asks_for_patient_scopes_only(
    cms_server: ServerThread, backend: Any, identity: KnownIdTokens
) -> None:
    client, key = backend
    id_token = _id_token()
    identity.patients[id_token] = "pat-78"
    form = client_credentials_form(
        client, key, cms_server.base, scope="system/*.rs", extensions=_cms(id_token)
    )
    assert "only patient/" in _refusal(_post(cms_server, form), 400, "invalid_scope")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"version": "2"}, "version"),
        ({"purpose_of_use": "TREAT"}, "purpose_of_use"),
        ({"id_token": None}, "id_token"),
        ({"id_token": "not-a-jwt"}, "id_token"),
    ],
)
def test_a_malformed_cms_smart_extension_is_invalid_request(
    cms_server: ServerThread, backend: Any, overrides: dict[str, Any], complaint: str
) -> None:
    client, key = backend
    form = client_credentials_form(
        client,
        key,
        cms_server.base,
        scope="patient/*.rs",
        extensions=_cms(_id_token(), overrides),
    )
    assert complaint in _refusal(_post(cms_server, form), 400, "invalid_request")


def test_cms_smart_is_refused_while_no_identifier_is_wired(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    form = client_credentials_form(
        client, key, server.base, scope="patient/*.rs", extensions=_cms(_id_token())
    )
    assert "not configured" in _refusal(_post(server, form), 400, "invalid_grant")


# --- headers, CORS, logs ------------------------------------------------------------------


def test_the_token_endpoint_answers_cors_preflights(server: ServerThread) -> None:
    response = httpx.options(
        f"{server.base}/auth/token",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]


def test_token_responses_and_errors_carry_cors_and_no_store(
    server: ServerThread, backend: Any
) -> None:
    client, key = backend
    ok = _post(server, client_credentials_form(client, key, server.base))
    bad = _post(server, {"grant_type": "password"})
    for response in (ok, bad):
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


def test_the_token_endpoint_takes_no_get(server: ServerThread) -> None:
    response = httpx.get(f"{server.base}/auth/token")
    assert _refusal(response, 405, "invalid_request") == "use POST"
    assert response.headers["allow"] == "POST, OPTIONS"


def test_no_token_assertion_or_id_token_reaches_the_logs(
    cms_server: ServerThread,
    backend: Any,
    database_url: str,
    identity: KnownIdTokens,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client, key = backend
    id_token = _id_token()
    identity.patients[id_token] = "pat-79"
    secrets: list[str] = [id_token]
    good = client_credentials_form(
        client, key, cms_server.base, scope="patient/*.rs", extensions=_cms(id_token)
    )
    secrets.append(good["client_assertion"])
    response = _post(cms_server, good)
    secrets.append(response.json()["access_token"])
    _post(cms_server, good)  # replayed: refused
    bad_kid = client_credentials_form(client, key, cms_server.base)
    bad_kid["client_assertion"] = key.assertion(
        client.client_id, f"{cms_server.base}/auth/token", header={"kid": "x"}
    )
    secrets.append(bad_kid["client_assertion"])
    _post(cms_server, bad_kid)
    unreachable = AppKey()
    other = backend_client(
        database_url, unreachable, jwks=None, jwks_uri="http://127.0.0.1:9/jwks.json"
    )
    failing = client_credentials_form(other, unreachable, cms_server.base)
    secrets.append(failing["client_assertion"])
    _post(cms_server, failing)  # logs a warning about the jwks_uri
    assert caplog.records  # the run did log something
    logged = caplog.text
    for secret in secrets:
        for part in secret.split("."):
            if len(part) > 16:
                assert part not in logged


# --- hostile input: always an RFC 6749 error, never a 500 ----------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "refresh_token", "refresh_token": "x", "client_id": "a\x00b"},
        {"grant_type": "refresh_token", "refresh_token": "x", "client_id": "ü" * 300},
        {"grant_type": "client_credentials\x00", "client_id": "a"},
        {"grant_type": "refresh_token", "refresh_token": "\x00", "client_id": "a"},
        {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
         "client_assertion": "a.b.c"},
        {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
         "client_assertion": "\u00e9.\u00e9.\u00e9"},
    ],
)  # fmt: skip
def test_malformed_forms_get_oauth_errors(server: ServerThread, form: dict[str, str]) -> None:
    response = _post(server, form)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_request", "invalid_client")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a\x00b", "iss": "a\x00b"},
        {"jti": "j\x00ti"},
        {"jti": "j" * 5000},
        {"extensions": {"hl7-b2b": {"organization_id": "o\x00rg", "purpose_of_use": "TREAT"}}},
        {"extensions": {"hl7-b2b": {"organization_id": ["x"], "purpose_of_use": "TREAT"}}},
        {"extensions": {"cms_smart": "yes"}},
        {"extensions": []},
        {"exp": "tomorrow"},
        {"aud": 42},
    ],
)
def test_hostile_assertion_claims_get_oauth_errors(
    server: ServerThread, backend: Any, claims: dict[str, Any]
) -> None:
    client, key = backend
    form = client_credentials_form(client, key, server.base, **claims)
    response = _post(server, form)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_request", "invalid_client")
