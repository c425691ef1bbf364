"""Logging the user in at an OpenID Connect provider, as its relying party (OIDC Core §3.1).

The authorization-code flow with PKCE (RFC 7636) and a nonce: this module builds the
redirect to the provider's authorization endpoint and exchanges the code the provider sends
back for an id_token. It does not judge the id_token: signature, issuer, audience, nonce, IAL2
and the patient match are healthmesh.auth.identity's (the one verifier of identities).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import httpx

from healthmesh.auth.authcode_settings import LoginProvider

_METADATA_TTL = 300.0  # seconds the provider's discovery document is cached


class LoginFailed(Exception):
    """The provider could not be reached, refused the code, or answered something unusable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve_issuer(provider: LoginProvider, origin: str) -> str:
    """The provider's issuer URL; a bare path names a provider on this server's origin."""
    if provider.issuer.startswith("/"):
        return origin.rstrip("/") + provider.issuer
    return provider.issuer


class OidcLogin:
    def __init__(self, provider: LoginProvider, http: httpx.AsyncClient | None = None) -> None:
        self.provider = provider
        self.http = http or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def metadata(self, issuer: str) -> dict[str, Any]:
        cached = self._metadata.get(issuer)
        if cached and time.monotonic() - cached[0] < _METADATA_TTL:
            return cached[1]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = await self.http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginFailed(
                f"the identity provider's discovery failed ({type(exc).__name__})"
            ) from None
        # OIDC Discovery §4.3: the document must name the issuer it was fetched for.
        if not isinstance(body, dict) or body.get("issuer") != issuer:
            raise LoginFailed("the identity provider's discovery names another issuer")
        for name in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(body.get(name), str):
                raise LoginFailed(f"the identity provider's discovery has no {name}")
        self._metadata[issuer] = (time.monotonic(), body)
        return body

    async def authorization_url(
        self, issuer: str, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        endpoint = (await self.metadata(issuer))["authorization_endpoint"]
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.provider.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.provider.scope,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def exchange(
        self, issuer: str, *, code: str, redirect_uri: str, code_verifier: str
    ) -> str:
        """The id_token for ``code`` (OIDC Core §3.1.3.1-3.1.3.3)."""
        endpoint = (await self.metadata(issuer))["token_endpoint"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.provider.client_id,
            "code_verifier": code_verifier,
        }
        if self.provider.client_secret:
            form["client_secret"] = self.provider.client_secret
        try:
            response = await self.http.post(
                endpoint, data=form, headers={"Accept": "application/json"}
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginFailed(
                f"the identity provider's token endpoint failed ({type(exc).__name__})"
            ) from None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise LoginFailed(
                f"the identity provider refused the login code ({error or response.status_code})"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise LoginFailed("the identity provider returned no id_token")
        return id_token
