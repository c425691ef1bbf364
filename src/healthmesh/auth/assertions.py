"""Client authentication by signed JWT: private_key_jwt (RFC 7523 §2.2, §3; SMART Backend
Services "Authenticating to the Token endpoint"; SPECS.md §3).

The assertion is signed RS384 or ES384 (passed to joserfc explicitly: neither is in its
recommended set) by a key of the client named by ``kid``; ``iss`` = ``sub`` = client_id;
``aud`` = the token endpoint URL; ``exp`` at most five minutes ahead; ``jti`` used once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from healthmesh.auth.clients import Client, ClientKeys
from healthmesh.auth.errors import OAuthError
from healthmesh.auth.replay import ReplayGuard
from healthmesh.auth.settings import MAX_ASSERTION_LIFETIME

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")


def _refuse(description: str) -> OAuthError:
    return OAuthError("invalid_client", description)


def unverified_subject(assertion: str) -> str | None:
    """The assertion's claimed client id, read without verification: for rate-limit buckets
    and for finding the client whose keys will then verify it — never trusted beyond that."""
    try:
        claims = json.loads(jws.extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


class AssertionVerifier:
    def __init__(self, keys: ClientKeys, replay: ReplayGuard, *, leeway: int = 30) -> None:
        self.keys = keys
        self.replay = replay
        self.leeway = leeway

    async def verify(
        self, assertion: str, client: Client, *, audiences: tuple[str, ...]
    ) -> dict[str, Any]:
        """The assertion's claims when it authenticates ``client`` to one of ``audiences``
        (the token endpoint URL; for introspection and revocation also their own URL)."""
        try:
            header = jws.extract_compact(assertion.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise _refuse("client_assertion is not a signed JWT") from None
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise _refuse(f"client_assertion must be signed with one of {ASSERTION_ALGORITHMS}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("client_assertion needs a kid header")
        # SMART Backend Services: a jku header must be the jwks_uri registered for the client.
        # Keys are never fetched from it: only registered keys ever verify an assertion.
        if "jku" in header and header["jku"] != client.jwks_uri:
            raise _refuse("client_assertion's jku is not the client's registered jwks_uri")
        key = await self.keys.key_for(client, kid)
        if key is None:
            raise _refuse("client_assertion's kid is not among the client's registered keys")
        try:
            token = jwt.decode(assertion, key, algorithms=[alg])
        except (JoseError, ValueError):
            raise _refuse("client_assertion's signature is not valid") from None
        claims: dict[str, Any] = dict(token.claims)
        now = time.time()
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise _refuse("client_assertion's iss and sub must be the client_id")
        aud = claims.get("aud")
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in audiences for a in named if isinstance(a, str)):
            raise _refuse("client_assertion's aud must be the token endpoint URL")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _refuse("client_assertion needs a numeric exp")
        if exp <= now - self.leeway:
            raise _refuse("client_assertion has expired")
        if exp > now + MAX_ASSERTION_LIFETIME + self.leeway:
            raise _refuse("client_assertion's exp is more than five minutes ahead")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _refuse(f"client_assertion's {name} must be numeric")
            if value > now + self.leeway:
                raise _refuse(f"client_assertion's {name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise _refuse("client_assertion needs a jti")
        if len(jti) > 256 or not jti.isprintable():
            raise _refuse("client_assertion's jti must be at most 256 printable characters")
        if not await self.replay.first_use(client.client_id, jti, int(exp)):
            raise _refuse("client_assertion's jti was already used")
        return claims
