"""The ``refresh_token`` grant (RFC 6749 §6) with rotation and reuse detection (grants.py).

The refresh token is bound to its client: presenting it with another client's credentials
is invalid_grant. The new access token's scope is the requested one when it is within the
grant, else invalid_scope; the 90-day window runs from the original authorization.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthmesh.auth.errors import OAuthError
from healthmesh.auth.token_endpoint import TokenRequest

if TYPE_CHECKING:
    from healthmesh.auth.server import AuthServer


def install(server: AuthServer) -> None:
    async def refresh_token(request: TokenRequest) -> dict[str, Any]:
        token = request.param("refresh_token")
        if token is None:
            raise OAuthError("invalid_request", "refresh_token is required")
        # The key first: once the old refresh token is spent, nothing may fail before the
        # client has its successor, or it would be locked out of its own authorization.
        signing_key = await server.keys.signing_key()
        refreshed = await server.grants.refresh(
            token, client_id=request.client.client_id, scope=request.param("scope")
        )
        return await server.token_response(
            refreshed.grant,
            issuer=request.issuer,
            scope=refreshed.scope,
            refresh_token=refreshed.refresh_token,
            signing_key=signing_key,
        )

    server.token_endpoint.register("refresh_token", refresh_token)
