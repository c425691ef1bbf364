"""Test helpers: an app library that signs software statements with real ES384/RS384 keys."""

from __future__ import annotations

import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from auth_support import register
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from healthmesh.auth.clients import Client
from healthmesh.auth.pkce import s256
from healthmesh.auth.registration import AppLibrary


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
        "scope": "openid fhirUser launch/patient offline_access patient/*.rs",
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
