"""Test helpers: an app library that signs software statements with real ES384/RS384 keys."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, TypeVar

import httpx
import pyotp
from auth_support import register
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.clients import Client
from healthmesh.auth.identity.test_idp import IdpStore, claims_of_patient
from healthmesh.auth.identity.test_idp.accounts import hash_password
from healthmesh.auth.pkce import s256
from healthmesh.auth.registration import AppLibrary
from healthmesh.store.identity_provider import AccountRow

T = TypeVar("T")


def app_keys() -> tuple[ECKey, dict[str, Any]]:
    """An app's own signing key and its public JWK Set (for private_key_jwt)."""
    key = ECKey.generate_key("P-384", parameters={"kid": uuid.uuid4().hex, "use": "sig"})
    return key, {"keys": [key.as_dict(private=False)]}


@dataclass
class Library:
    """A CMS-style app library: an issuer and its key, ES384 by default."""

    issuer: str = field(default_factory=lambda: f"https://library-{uuid.uuid4().hex[:8]}.example")
    alg: str = "ES384"
    key: ECKey | RSAKey = field(init=False)

    def __post_init__(self) -> None:
        kid = uuid.uuid4().hex
        if self.alg == "RS384":
            self.key = RSAKey.generate_key(2048, parameters={"kid": kid})
        else:
            self.key = ECKey.generate_key("P-384", parameters={"kid": kid})

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    @property
    def keys(self) -> KeySet:
        return KeySet.import_key_set(self.jwks)  # type: ignore[arg-type]

    def config(self) -> AppLibrary:
        return AppLibrary(issuer=self.issuer, jwks=self.jwks)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        _, jwks = app_keys()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "software_id": f"app-{uuid.uuid4().hex[:8]}",
            "client_name": "Glucose Buddy",
            "redirect_uris": ["https://app.example/callback"],
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["authorization_code", "refresh_token"],
            "jwks": jwks,
            "extensions": {"cms_app": {"library_status": "active"}},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, alg: str | None = None) -> str:
        header = {"alg": alg or self.alg, "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=[alg or self.alg])

    def statement(self, **overrides: Any) -> str:
        return self.sign(self.claims(**overrides))


# -- the flow through real HTTP -------------------------------------------------------------

REDIRECT = "https://app.example/callback"


def public_client(database_url: str, **overrides: Any) -> Client:
    """A registered public app (auth none) for the authorization-code flow."""
    values: dict[str, Any] = {
        "client_id": f"app-{uuid.uuid4().hex[:10]}",
        "name": "Glucose Buddy",
        "redirect_uris": (REDIRECT,),
        "scope": "openid fhirUser launch launch/patient offline_access patient/*.rs",
        "grant_types": ("authorization_code", "refresh_token"),
    }
    values.update(overrides)
    return register(database_url, Client(**values))


@dataclass
class Pkce:
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        return s256(self.verifier)


def authorize_params(
    client: Client, base: str, pkce: Pkce, **overrides: str | None
) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0],
        "scope": "openid fhirUser launch/patient patient/Observation.rs",
        "state": secrets.token_urlsafe(12),
        "aud": base,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def redirect_query(response: httpx.Response) -> dict[str, str]:
    """The query of a redirect to the app (asserting it is one)."""
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    parts = urllib.parse.urlsplit(location)
    return dict(urllib.parse.parse_qsl(parts.query))


# -- a person with a test-IdP login, and a browser that plays them --------------------------


@dataclass(frozen=True)
class Person:
    patient_id: str
    username: str
    password: str
    totp_secret: str
    name: str  # "Given Family", as the record has it


def _letters(n: int = 8) -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)).capitalize()


def person(database_url: str, fhir: httpx.Client) -> Person:
    """A new Patient with unique demographics, and a test-IdP account for them."""
    body = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": _letters(), "given": [_letters()]}],
        "gender": "female",
        "birthDate": f"19{secrets.randbelow(90) + 10}-0{secrets.randbelow(9) + 1}-1{secrets.randbelow(9)}",
        "address": [
            {
                "line": [f"{secrets.randbelow(900) + 100} {_letters()} Street"],
                "city": "Boston",
                "state": "MA",
                "postalCode": "02115",
            }
        ],
    }
    created = fhir.post("/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    patient = created.json()
    username = f"u{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(12)
    totp = pyotp.random_base32()

    async def add(pool: Any) -> None:
        await IdpStore(pool).upsert_account(
            AccountRow(
                username=username,
                patient_id=patient["id"],
                subject=uuid.uuid4().hex,
                password_hash=hash_password(password),
                totp_secret=totp,
                last_totp_step=0,
                claims=json.dumps(claims_of_patient(patient), sort_keys=True),
            )
        )

    with_pool(database_url, add)
    official = patient["name"][0]
    name = f"{official['given'][0]} {official['family']}"
    return Person(patient["id"], username, password, totp, name)


def with_pool(database_url: str, body: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        pool: Any = AsyncConnectionPool(
            database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


class _Inputs(HTMLParser):
    """The inputs of the first form of a page: hidden fields and checkboxes."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str, str]] = []  # (type, name, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        if tag == "input" and "name" in a:
            self.fields.append((a.get("type", "text"), a["name"], a.get("value", "")))


def form_of(page: str) -> _Inputs:
    parser = _Inputs()
    parser.feed(page)
    return parser


@dataclass(frozen=True)
class ConsentForm:
    action: str
    request: str
    csrf: str
    scopes: list[str]
    page: str


class Browser:
    """A person's browser: a cookie jar, following the flow by hand so tests can intervene."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorize(self, params: dict[str, str]) -> httpx.Response:
        return self.http.get(f"{self.base}/auth/authorize", params=params)

    def sign_in_at_idp(
        self, at_idp: httpx.Response, who: Person, *, totp: str | None = None
    ) -> str:
        """From the redirect to the IdP: its login page and the login; our callback URL."""
        assert at_idp.status_code == 303, at_idp.text
        assert "/idp/" in at_idp.headers["location"], at_idp.headers["location"]
        login_page = self.http.get(at_idp.headers["location"])
        assert login_page.status_code == 200, login_page.text
        form = form_of(login_page.text)
        data = {name: value for kind, name, value in form.fields if kind == "hidden"}
        data.update(
            username=who.username,
            password=who.password,
            totp=totp or pyotp.TOTP(who.totp_secret).now(),
        )
        action = urllib.parse.urljoin(str(login_page.url), form.action or "")
        to_callback = self.http.post(action, data=data)
        assert to_callback.status_code == 303, to_callback.text
        return to_callback.headers["location"]

    def login(self, at_idp: httpx.Response, who: Person) -> httpx.Response:
        """Sign in at the IdP and follow its redirect back to our callback."""
        return self.http.get(self.sign_in_at_idp(at_idp, who))

    def consent(self, after_login: httpx.Response) -> ConsentForm:
        assert after_login.status_code == 303, after_login.text
        page = self.http.get(after_login.headers["location"])
        assert page.status_code == 200, page.text
        form = form_of(page.text)
        values = {name: value for kind, name, value in form.fields if kind == "hidden"}
        scopes = [value for kind, name, value in form.fields if kind == "checkbox"]
        return ConsentForm(form.action or "", values["request"], values["csrf"], scopes, page.text)

    def decide(
        self,
        form: ConsentForm,
        *,
        approve: bool = True,
        scopes: list[str] | None = None,
        csrf: str | None = None,
        **headers: str,
    ) -> httpx.Response:
        data: list[tuple[str, str]] = [("request", form.request), ("csrf", csrf or form.csrf)]
        data += [("scope", s) for s in (form.scopes if scopes is None else scopes)]
        data.append(("decision", "approve" if approve else "deny"))
        return self.http.post(
            form.action,
            content=urllib.parse.urlencode(data),
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
        )

    def code_for(self, params: dict[str, str], who: Person, scopes: list[str] | None = None) -> str:
        """The whole browser part: authorize, log in, approve; the code the app receives."""
        form = self.consent(self.login(self.authorize(params), who))
        query = redirect_query(self.decide(form, scopes=scopes))
        assert query["state"] == params["state"]
        return query["code"]


def exchange(
    http: httpx.Client, base: str, client: Client, code: str, pkce: Pkce, **overrides: str | None
) -> httpx.Response:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uris[0],
        "client_id": client.client_id,
        "code_verifier": pkce.verifier,
    }
    form.update(overrides)
    return http.post(f"{base}/auth/token", data={k: v for k, v in form.items() if v is not None})
