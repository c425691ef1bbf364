"""The built-in TEST identity provider, through real HTTP: discovery, login with password +
TOTP, rate limits, code exchange with PKCE, and id_tokens our own verifier accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from psycopg_pool import AsyncConnectionPool

from healthmesh.api.app import create_app
from healthmesh.auth.identity import (
    Ial2PatientIdentifier,
    IdentityClaims,
    IdentityProvider,
    IdentityProviders,
    IdentityRefused,
    MatchDecision,
)
from healthmesh.auth.identity.test_idp import (
    LABEL,
    DemoAccount,
    IdpNotAllowedInProduction,
    IdpStore,
    demo_accounts,
    mint_ial2_id_token,
    provider_of_test_idp,
    provision_accounts,
    register_client,
)
from healthmesh.auth.replay import ReplayGuard
from healthmesh.config import Settings
from healthmesh.store.repository import Repository

from conftest import ServerThread
from support import FHIR_JSON, unique

T = TypeVar("T")


@pytest.fixture(scope="module")
def idp_server(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(database_url=database_url, open=True, test_identity_provider=True)
    with ServerThread(settings) as running:
        yield running


def origin(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.port}"


def run(
    database_url: str, body: Callable[[AsyncConnectionPool[Any], Repository], Awaitable[T]]
) -> T:
    async def main() -> T:
        repository = Repository(database_url, min_size=1, max_size=4)
        await repository.open()
        try:
            return await body(repository.pool, repository)
        finally:
            await repository.close()

    return asyncio.run(main())


def new_person(
    server: ServerThread, database_url: str, family: str | None = None
) -> tuple[str, DemoAccount]:
    """A synthetic Patient created over FHIR, and its provisioned test IdP account."""
    family = family or unique("Fam").replace("-", "")
    body = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": ["Lauren", "Ann"]}],
        "birthDate": "1984-03-07",
        "gender": "female",
        "telecom": [
            {"system": "phone", "value": "555-867-5309"},
            {"system": "email", "value": "lauren@example.org"},
        ],
        "address": [
            {"line": ["42 Wallaby Way"], "city": "Boston", "state": "MA", "postalCode": "02139"}
        ],
        "identifier": [
            {
                "system": "http://hl7.org/fhir/sid/us-ssn",
                "value": "999-"
                + str(secrets.randbelow(90) + 10)
                + "-"
                + str(secrets.randbelow(9000) + 1000),
            }
        ],
    }
    response = httpx.post(f"{server.base}/Patient", json=body, headers=FHIR_JSON, timeout=30)
    assert response.status_code == 201, response.text
    patient_id = str(response.json()["id"])

    async def provision(
        pool: AsyncConnectionPool[Any], repository: Repository
    ) -> list[DemoAccount]:
        return await provision_accounts(repository, IdpStore(pool), patient_ids=[patient_id])

    accounts = run(database_url, provision)
    return patient_id, next(a for a in accounts if a.patient_id == patient_id)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def hidden_fields(page: str) -> dict[str, str]:
    return {
        html.unescape(m[0]): html.unescape(m[1])
        for m in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    }


class Flow:
    """A relying party walking through the authorization-code flow with real HTTP."""

    def __init__(self, server: ServerThread, client_id: str = "healthmesh") -> None:
        self.server = server
        self.idp = f"{origin(server)}/idp"
        self.client_id = client_id
        self.redirect_uri = f"{origin(server)}/callback"
        self.verifier, self.challenge = pkce()
        self.state = secrets.token_urlsafe(8)
        self.nonce = secrets.token_urlsafe(8)
        self.http = httpx.Client(timeout=30, follow_redirects=False)

    def authorize(self, **extra: str) -> httpx.Response:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        return self.http.get(f"{self.idp}/authorize", params=params)

    def login(
        self, account: DemoAccount, *, password: str | None = None, code: str | None = None
    ) -> httpx.Response:
        page = self.authorize()
        assert page.status_code == 200, page.text
        form = {
            **hidden_fields(page.text),
            "username": account.username,
            "password": account.password if password is None else password,
            "totp": account.current_code() if code is None else code,
        }
        return self.http.post(f"{self.idp}/login", data=form)

    def code_from(self, response: httpx.Response) -> str:
        assert response.status_code == 303, response.text
        location = urlsplit(response.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == self.redirect_uri
        query = parse_qs(location.query)
        assert query["state"] == [self.state] and query["iss"] == [self.idp]
        return query["code"][0]

    def token(self, code: str, verifier: str | None = None, **auth: Any) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier or self.verifier,
            "client_id": self.client_id,
        }
        return self.http.post(f"{self.idp}/token", data=form, **auth)


def test_discovery_names_a_standard_provider_at_origin_slash_idp(idp_server: ServerThread) -> None:
    response = httpx.get(f"{origin(idp_server)}/idp/.well-known/openid-configuration")
    assert response.status_code == 200
    config = response.json()
    issuer = f"{origin(idp_server)}/idp"
    assert config["issuer"] == issuer
    assert config["authorization_endpoint"] == f"{issuer}/authorize"
    assert config["token_endpoint"] == f"{issuer}/token"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    jwks = httpx.get(config["jwks_uri"]).json()
    assert jwks["keys"] and all("d" not in k and "p" not in k for k in jwks["keys"])
    assert response.headers["x-test-identity-service"] == "synthetic people only"


def test_every_page_is_labelled_as_a_test_service(idp_server: ServerThread) -> None:
    flow = Flow(idp_server)
    pages = [
        httpx.get(f"{origin(idp_server)}/idp/"),
        flow.authorize(),
        flow.authorize(client_id="nobody"),
    ]
    for page in pages:
        assert "text/html" in page.headers["content-type"]
        assert html.escape(LABEL) in page.text


def test_login_with_password_and_totp_yields_an_ial2_id_token_our_verifier_accepts(
    idp_server: ServerThread, database_url: str
) -> None:
    patient_id, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    code = flow.code_from(flow.login(account))
    response = flow.token(code)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    id_token = response.json()["id_token"]

    # Verifiable by any relying party with the published JWKS ...
    jwks = KeySet.import_key_set(httpx.get(f"{flow.idp}/jwks").json())
    claims = jwt.decode(id_token, jwks, algorithms=["RS256"]).claims
    assert claims["iss"] == flow.idp and claims["aud"] == "healthmesh"
    assert claims["nonce"] == flow.nonce and claims["identity_assurance_level"] == 2
    assert claims["given_name"] == "Lauren" and claims["birthdate"] == "1984-03-07"
    assert claims["amr"] == ["pwd", "otp"]

    # ... and by ours, fetching that JWKS over HTTP, then matched to the very Patient.
    provider = IdentityProvider(
        issuer=flow.idp, audiences=("healthmesh",), jwks_uri=f"{flow.idp}/jwks"
    )

    async def body(pool: AsyncConnectionPool[Any], repository: Repository) -> str:
        identifier = Ial2PatientIdentifier(
            repository, IdentityProviders([provider]), ReplayGuard(pool)
        )
        return (await identifier.identify(id_token, nonce=flow.nonce)).patient_id

    assert run(database_url, body) == patient_id


def test_a_wrong_totp_is_refused_without_saying_which_factor_failed(
    idp_server: ServerThread, database_url: str
) -> None:
    _, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    wrong = f"{(int(account.current_code()) + 1) % 1_000_000:06d}"
    response = flow.login(account, code=wrong)
    assert response.status_code == 401
    assert "username, password or one-time code" in response.text
    assert account.password not in response.text


def test_a_totp_code_works_once(idp_server: ServerThread, database_url: str) -> None:
    _, account = new_person(idp_server, database_url)
    code = account.current_code()
    first = Flow(idp_server)
    first.code_from(first.login(account, code=code))
    second = Flow(idp_server)
    assert second.login(account, code=code).status_code == 401


def test_repeated_failures_answer_429_with_retry_after(
    idp_server: ServerThread, database_url: str
) -> None:
    _, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    statuses = [flow.login(account, password="wrong-password").status_code for _ in range(5)]
    assert statuses == [401] * 5
    locked = flow.login(account)  # even the right password and code now wait
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 15 * 60


def test_the_rate_limit_holds_across_server_processes(
    idp_server: ServerThread, database_url: str
) -> None:
    _, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    for _ in range(5):
        assert flow.login(account, code="000000").status_code == 401
    settings = Settings(database_url=database_url, open=True, test_identity_provider=True)
    with ServerThread(settings) as other:
        assert Flow(other).login(account).status_code == 429


def test_the_code_exchange_needs_the_pkce_verifier(
    idp_server: ServerThread, database_url: str
) -> None:
    _, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    code = flow.code_from(flow.login(account))
    wrong = flow.token(code, verifier=pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_a_code_is_single_use(idp_server: ServerThread, database_url: str) -> None:
    _, account = new_person(idp_server, database_url)
    flow = Flow(idp_server)
    code = flow.code_from(flow.login(account))
    assert flow.token(code).status_code == 200
    again = flow.token(code)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_authorize_refuses_plain_pkce_and_foreign_redirects(idp_server: ServerThread) -> None:
    flow = Flow(idp_server)
    plain = flow.authorize(code_challenge_method="plain")
    assert plain.status_code == 303
    assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]
    foreign = flow.authorize(redirect_uri="https://evil.example/cb")
    assert foreign.status_code == 400 and "location" not in foreign.headers


def test_a_registered_confidential_client_must_authenticate(
    idp_server: ServerThread, database_url: str
) -> None:
    _, account = new_person(idp_server, database_url)
    client_id, secret = unique("app"), secrets.token_urlsafe(24)
    flow = Flow(idp_server, client_id=client_id)
    flow.redirect_uri = "https://app.example/callback"

    async def register(pool: AsyncConnectionPool[Any], repository: Repository) -> None:
        await register_client(pool, client_id, [flow.redirect_uri], secret)

    run(database_url, register)
    code = flow.code_from(flow.login(account))
    refused = flow.token(code, auth=(client_id, "not-the-secret"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    code = flow.code_from(
        flow.login(account, code=pyotp.TOTP(account.totp_secret).at(time.time() + 30))
    )
    accepted = flow.token(code, auth=(client_id, secret))
    assert accepted.status_code == 200 and "id_token" in accepted.json()


def test_minted_id_tokens_identify_the_person(idp_server: ServerThread, database_url: str) -> None:
    patient_id, _ = new_person(idp_server, database_url)
    patient = httpx.get(f"{idp_server.base}/Patient/{patient_id}").json()
    issuer = f"{origin(idp_server)}/idp"
    decisions: list[MatchDecision] = []

    async def record(claims: IdentityClaims, decision: MatchDecision) -> None:
        decisions.append(decision)

    async def body(pool: AsyncConnectionPool[Any], repository: Repository) -> tuple[str, str]:
        providers = IdentityProviders(
            [await provider_of_test_idp(pool, issuer=issuer, audiences=("node",))]
        )
        identifier = Ial2PatientIdentifier(
            repository, providers, ReplayGuard(pool), on_decision=record
        )
        token = await mint_ial2_id_token(pool, issuer=issuer, audience="node", patient=patient)
        found = await identifier.patient_for(token)
        old = await mint_ial2_id_token(
            pool, issuer=issuer, audience="node", patient=patient, auth_time=int(time.time()) - 900
        )
        try:
            await identifier.patient_for(old)
        except IdentityRefused as refused:
            return found, refused.code
        return found, "accepted"

    assert run(database_url, body) == (patient_id, "auth_time_too_old")
    assert [(d.outcome, d.patient_id) for d in decisions] == [("matched", patient_id)]


def test_an_unmatched_identity_is_refused_and_the_decision_recorded(
    idp_server: ServerThread, database_url: str
) -> None:
    issuer = f"{origin(idp_server)}/idp"
    stranger = {"resourceType": "Patient", "id": "not-stored", "birthDate": "1950-02-02",
                "name": [{"family": "Nobody", "given": ["Nemo"]}],
                "address": [{"line": ["1 Nowhere Rd"]}]}  # fmt: skip
    decisions: list[MatchDecision] = []

    async def record(claims: IdentityClaims, decision: MatchDecision) -> None:
        decisions.append(decision)

    async def body(pool: AsyncConnectionPool[Any], repository: Repository) -> str:
        providers = IdentityProviders(
            [await provider_of_test_idp(pool, issuer=issuer, audiences=("node",))]
        )
        identifier = Ial2PatientIdentifier(
            repository, providers, ReplayGuard(pool), on_decision=record
        )
        token = await mint_ial2_id_token(pool, issuer=issuer, audience="node", patient=stranger)
        with pytest.raises(IdentityRefused) as caught:
            await identifier.patient_for(token)
        return caught.value.code

    assert run(database_url, body) == "no_match"
    assert [d.outcome for d in decisions] == ["no_match"]


def test_demo_accounts_are_deterministic_and_passwords_stored_hashed(
    idp_server: ServerThread, database_url: str
) -> None:
    patient_id, account = new_person(idp_server, database_url)

    async def body(
        pool: AsyncConnectionPool[Any], repository: Repository
    ) -> tuple[list[DemoAccount], str]:
        again = await provision_accounts(repository, IdpStore(pool), patient_ids=[patient_id])
        row = await IdpStore(pool).account(account.username)
        assert row is not None
        return again, row.password_hash

    again, stored = run(database_url, body)
    assert again == [account]
    assert account.password not in stored and stored.startswith("scrypt$")


def test_provisioning_everyone_respects_the_limit_on_new_accounts(
    idp_server: ServerThread, database_url: str
) -> None:
    for _ in range(3):  # Patients without accounts
        httpx.post(
            f"{idp_server.base}/Patient",
            json={"resourceType": "Patient", "name": [{"family": "Nolog", "given": ["Ina"]}]},
            headers=FHIR_JSON,
        ).raise_for_status()

    async def body(pool: AsyncConnectionPool[Any], repository: Repository) -> tuple[int, int]:
        store = IdpStore(pool)
        before = len(await demo_accounts(store, limit=None))
        await provision_accounts(repository, store, limit=2)
        return before, len(await demo_accounts(store, limit=None))

    before, after = run(database_url, body)
    assert after == before + 2


def test_the_test_idp_refuses_to_start_in_production(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEALTHMESH_ENV", "production")
    with pytest.raises(IdpNotAllowedInProduction):
        create_app(Settings(database_url=database_url, open=True, test_identity_provider=True))
    create_app(Settings(database_url=database_url, open=True))  # without it, production is fine


def test_without_the_setting_there_is_no_idp(client: httpx.Client, server: ServerThread) -> None:
    assert httpx.get(f"{origin(server)}/idp/.well-known/openid-configuration").status_code == 404


def test_a_silent_login_request_is_answered_login_required(idp_server: ServerThread) -> None:
    response = Flow(idp_server).authorize(prompt="none")
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["login_required"]


def test_patient_for_accepts_the_audience_the_caller_names(
    idp_server: ServerThread, database_url: str
) -> None:
    patient_id, _ = new_person(idp_server, database_url)
    patient = httpx.get(f"{idp_server.base}/Patient/{patient_id}").json()
    issuer = f"{origin(idp_server)}/idp"

    async def body(pool: AsyncConnectionPool[Any], repository: Repository) -> list[str]:
        providers = IdentityProviders(
            [await provider_of_test_idp(pool, issuer=issuer, audiences=("node",))]
        )
        identifier = Ial2PatientIdentifier(repository, providers, ReplayGuard(pool))
        out = []
        for audiences in (None, ("app-client",)):
            token = await mint_ial2_id_token(
                pool, issuer=issuer, audience="app-client", patient=patient
            )
            try:
                out.append(await identifier.patient_for(token, audiences=audiences))
            except IdentityRefused as refused:
                out.append(refused.code)
        return out

    assert run(database_url, body) == ["wrong_audience", patient_id]
