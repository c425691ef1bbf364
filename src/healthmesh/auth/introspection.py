"""Token introspection (RFC 7662) and revocation (RFC 7009), for access and refresh tokens.

Both are client-authenticated like the token endpoint, and a client sees and revokes only
its own tokens: another client's token is ``{"active": false}`` to it and revoking it does
nothing — the same answers as for a token that does not exist, so neither endpoint tells a
stranger whether a token is live (RFC 7662 §2.2 lets the server decide what a caller may
learn; RFC 7009 §2.2 answers 200 for invalid tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthmesh.auth.clients import Client
from healthmesh.auth.grant import InvalidToken

if TYPE_CHECKING:
    from healthmesh.auth.server import AuthServer

INACTIVE: dict[str, Any] = {"active": False}


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


async def introspect(
    auth: AuthServer, token: str, client: Client, *, issuer: str
) -> dict[str, Any]:
    if _looks_like_jwt(token):
        try:
            grant, claims = await auth.verifier.verify_with_claims(token, audience=issuer)
        except InvalidToken:
            return INACTIVE
        if grant.client_id != client.client_id:
            return INACTIVE
        body: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            "scope": grant.scope,
            "client_id": grant.client_id,
            "sub": claims.get("sub"),
            "iss": claims["iss"],
            "aud": claims["aud"],
            "iat": claims["iat"],
            "exp": grant.expires_at,
            "jti": grant.token_id,
        }
        for name, value in (
            ("patient", grant.patient),
            ("fhirUser", grant.fhir_user),
            ("organization", grant.organization),
            ("purpose_of_use", grant.purpose_of_use),
        ):
            if value is not None:
                body[name] = value
        return body
    found = await auth.grants.find_refresh_token(token)
    if found is None:
        return INACTIVE
    grant_record, unused = found
    if grant_record.client_id != client.client_id or not unused or not grant_record.live:
        return INACTIVE
    body = {
        "active": True,
        "token_type": "refresh_token",
        "scope": grant_record.scope,
        "client_id": grant_record.client_id,
        "sub": grant_record.subject,
        "iss": issuer,
        "iat": int(grant_record.created_at.timestamp()),
        "exp": int(grant_record.expires_at.timestamp()),
    }
    if grant_record.patient is not None:
        body["patient"] = grant_record.patient
    return body


async def revoke(auth: AuthServer, token: str, client: Client, *, issuer: str) -> None:
    """Revoke an access token (that token) or a refresh token (its whole grant, and so every
    access token issued under it: RFC 7009 §2.1 'SHOULD also invalidate')."""
    if _looks_like_jwt(token):
        try:
            claims = await auth.verifier.verify_signed(token, audience=issuer)
        except InvalidToken:
            return  # not ours, or already expired: nothing left to revoke
        if claims["client_id"] == client.client_id:
            await auth.grants.revoke_access_token(claims["jti"], int(claims["exp"]))
        return
    found = await auth.grants.find_refresh_token(token)
    if found is not None and found[0].client_id == client.client_id:
        await auth.grants.revoke(found[0].grant_id)
