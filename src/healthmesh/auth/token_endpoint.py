"""The token endpoint's core (RFC 6749 §3.2, §5): authenticate the client, then dispatch on
``grant_type`` to a handler. Handlers register by name (:meth:`TokenEndpoint.register`):
``backend_services`` adds client_credentials, ``refresh`` adds refresh_token, and the
authorization-code flow adds authorization_code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from healthmesh.auth.assertions import ASSERTION_TYPE, AssertionVerifier, unverified_subject
from healthmesh.auth.clients import Client, ClientStore, valid_client_id
from healthmesh.auth.errors import OAuthError


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequest:
    """One authenticated request to the token endpoint."""

    form: Mapping[str, str]  # the application/x-www-form-urlencoded parameters, each once
    client: Client  # authenticated (private_key_jwt) or identified (public client)
    issuer: str  # the FHIR base URL: iss and aud of the tokens issued
    token_url: str  # this endpoint's URL: the aud of client assertions
    remote: str | None = None
    # The verified client assertion's claims (private_key_jwt), for its extensions.
    assertion: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        value = self.form.get(name)
        return value if value else None


GrantHandler = Callable[[TokenRequest], Awaitable[dict[str, Any]]]


class ClientAuthenticator:
    """Who is calling (RFC 6749 §2.3): private_key_jwt by assertion, or a public client by
    client_id alone. Unknown, disabled or wrongly authenticated clients are invalid_client."""

    def __init__(self, clients: ClientStore, assertions: AssertionVerifier) -> None:
        self.clients = clients
        self.assertions = assertions

    async def authenticate(
        self, form: Mapping[str, str], *, audiences: tuple[str, ...]
    ) -> tuple[Client, dict[str, Any]]:
        """The calling client, and the verified assertion's claims (empty for public clients).
        ``audiences``: what a client assertion's aud may be (the token endpoint URL first)."""
        assertion = form.get("client_assertion")
        assertion_type = form.get("client_assertion_type")
        client_id = form.get("client_id")
        if assertion or assertion_type:
            if assertion_type != ASSERTION_TYPE:
                raise OAuthError(
                    "invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}"
                )
            if not assertion:
                raise OAuthError("invalid_client", "client_assertion is missing")
            claimed = unverified_subject(assertion)
            if claimed is None or (client_id and client_id != claimed):
                raise OAuthError("invalid_client", "client_assertion does not name the client")
            client = await self._known(claimed)
            if not client.confidential:
                raise OAuthError("invalid_client", "this client does not use private_key_jwt")
            claims = await self.assertions.verify(assertion, client, audiences=audiences)
            return client, claims
        if not client_id:
            raise OAuthError("invalid_client", "client authentication is required")
        client = await self._known(client_id)
        if client.confidential:
            raise OAuthError("invalid_client", "this client must authenticate with private_key_jwt")
        return client, {}

    async def _known(self, client_id: str) -> Client:
        client = await self.clients.get(client_id) if valid_client_id(client_id) else None
        if client is None or client.disabled:
            # One answer for both: whether a client id exists is not for strangers to learn.
            raise OAuthError("invalid_client", "unknown or disabled client")
        return client


class TokenEndpoint:
    def __init__(self, authenticator: ClientAuthenticator) -> None:
        self.authenticator = authenticator
        self.handlers: dict[str, GrantHandler] = {}

    def register(self, grant_type: str, handler: GrantHandler) -> None:
        self.handlers[grant_type] = handler

    @property
    def grant_types(self) -> list[str]:
        return sorted(self.handlers)

    async def handle(
        self, form: Mapping[str, str], *, issuer: str, token_url: str, remote: str | None
    ) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        handler = self.handlers.get(grant_type)
        if handler is None:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        client, claims = await self.authenticator.authenticate(form, audiences=(token_url,))
        if grant_type not in client.grant_types:
            raise OAuthError(
                "unauthorized_client", f"this client is not registered for {grant_type}"
            )
        request = TokenRequest(
            form=form,
            client=client,
            issuer=issuer,
            token_url=token_url,
            remote=remote,
            assertion=claims,
        )
        return await handler(request)
