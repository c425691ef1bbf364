"""Tunables of the authorization server, with the limits the specs set (SPECS.md §3)."""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_ACCESS_TOKEN_LIFETIME = 3600  # SMART App Launch 2.2: access tokens live at most one hour
MAX_ASSERTION_LIFETIME = 300  # SMART Backend Services / RFC 7523: exp at most 5 min ahead


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    access_token_lifetime: int = 3600  # seconds, for user and patient tokens
    backend_token_lifetime: int = 300  # seconds, for client_credentials (SMART recommends 300)
    refresh_window_days: int = 90  # from the original authorization, not extended by rotation
    leeway: int = 30  # clock skew tolerated on exp / nbf / iat
    # Brute-force limits on /auth/token, /auth/introspect, /auth/revoke per fixed window.
    rate_window: int = 60
    rate_per_client: int = 60
    rate_per_address: int = 600  # NAT: many patients behind one address
    jwks_cache_seconds: int = 300  # a client's jwks_uri is fetched again after this
    jwks_refetch_interval: int = 30  # at most one refetch per jwks_uri this often on unknown kid

    def __post_init__(self) -> None:
        for name in ("access_token_lifetime", "backend_token_lifetime"):
            value = getattr(self, name)
            if not 0 < value <= MAX_ACCESS_TOKEN_LIFETIME:
                raise ValueError(f"{name} must be 1..{MAX_ACCESS_TOKEN_LIFETIME} s, not {value}")

    @staticmethod
    def from_env() -> AuthSettings:
        values: dict[str, int] = {}
        for name in AuthSettings.__dataclass_fields__:
            env = f"HEALTHMESH_AUTH_{name.upper()}"
            if env in os.environ:
                values[name] = int(os.environ[env])
        return AuthSettings(**values)
