"""Test helpers: an app library that signs software statements with real ES384/RS384 keys."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

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
