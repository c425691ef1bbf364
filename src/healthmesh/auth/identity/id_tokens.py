"""Verifying an IAL2 id_token (SPECS.md §3, cms_smart v1 and OpenID Connect Core §3.1.3.7).

Order matters: nothing about the token is trusted before its signature is checked against
an allow-listed provider's key, and the one-time ``iss``+``jti`` is recorded only after every
other check passed, so a token refused for another reason does not use up its jti.
Every refusal is an :class:`IdentityRefused` with a stable ``code``; no message contains the
token or a claim value.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError

from healthmesh.auth.identity.claims import IdentityClaims, assurance_level, read_claims
from healthmesh.auth.identity.errors import IdentityRefused
from healthmesh.auth.identity.providers import ALLOWED_ALGORITHMS, IdentityProviders

REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "auth_time")
MAX_TOKEN_LENGTH = 16 * 1024  # id_tokens are a few KB; anything larger is refused unread


class OneTimeIds(Protocol):
    """healthmesh.auth.replay.ReplayGuard's shape."""

    async def first_use(self, issuer: str, jti: str, expires_at: int) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IdTokenPolicy:
    max_auth_age_seconds: int = 300  # SPECS.md §3: auth_time ≤ 300 s old
    leeway_seconds: int = 30  # clock skew allowed on exp, iat, nbf, auth_time
    min_assurance_level: int = 2  # IAL2


def _b64json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityRefused(
            f"the id_token {what} is not base64url JSON", code="malformed"
        ) from exc
    if not isinstance(value, dict):
        raise IdentityRefused(f"the id_token {what} is not a JSON object", code="malformed")
    return value


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload, read only to choose the provider and key; trusted after signature."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise IdentityRefused("the id_token is not a compact JWS of sane size", code="malformed")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise IdentityRefused("the id_token is not a compact JWS (three parts)", code="malformed")
    return _b64json(parts[0], "header"), _b64json(parts[1], "payload")


def _refuse(code: str, reason: str) -> IdentityRefused:
    return IdentityRefused(reason, code=code)


def _check_times(payload: Mapping[str, Any], policy: IdTokenPolicy, now: float) -> None:
    for name in ("exp", "iat", "auth_time"):
        value = payload[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _refuse("malformed_claim", f"id_token claim {name!r} is not a NumericDate")
    leeway = policy.leeway_seconds
    if payload["exp"] + leeway <= now:
        raise _refuse("expired", "the id_token has expired")
    if payload["iat"] - leeway > now:
        raise _refuse("issued_in_future", "the id_token is issued in the future")
    nbf = payload.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf - leeway > now:
        raise _refuse("not_yet_valid", "the id_token is not valid yet (nbf)")
    auth_time = payload["auth_time"]
    if auth_time - leeway > now:
        raise _refuse("auth_time_in_future", "the id_token's auth_time is in the future")
    if now - auth_time > policy.max_auth_age_seconds + leeway:
        raise _refuse(
            "auth_time_too_old",
            f"the user authenticated more than {policy.max_auth_age_seconds} s ago (auth_time)",
        )


async def verify_ial2_id_token(
    token: str,
    *,
    providers: IdentityProviders,
    replay: OneTimeIds,
    policy: IdTokenPolicy | None = None,
    audiences: tuple[str, ...] | None = None,
    nonce: str | None = None,
    now: float | None = None,
) -> IdentityClaims:
    """Check ``token`` is a fresh, unreplayed IAL2 id_token of an allow-listed provider.

    ``audiences`` overrides the provider's configured ones (e.g. the client id the app had at
    the provider); ``nonce`` is checked when given (OIDC Core §3.1.3.7 item 11).
    """
    policy = policy or IdTokenPolicy()
    now = time.time() if now is None else now
    header, unverified = _unverified(token)

    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise _refuse("algorithm_not_allowed", f"id_token alg {str(alg)[:16]!r} is not allowed")
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extensions
        raise _refuse("malformed", "the id_token has critical header parameters we do not know")
    issuer = unverified.get("iss")
    cache = providers.get(issuer) if isinstance(issuer, str) else None
    if cache is None:
        raise _refuse("unknown_issuer", "the id_token's issuer is not an allow-listed provider")
    if alg not in cache.provider.algorithms:
        raise _refuse("algorithm_not_allowed", f"{issuer} is not configured to sign with {alg}")
    kid = header.get("kid")
    key = await cache.key_for(kid if isinstance(kid, str) else None, alg)
    try:
        payload = dict(jwt.decode(token, key, algorithms=[alg]).claims)
    except BadSignatureError as exc:
        raise _refuse("bad_signature", "the id_token's signature does not verify") from exc
    except JoseError as exc:
        raise _refuse("malformed", f"the id_token does not decode ({exc.error})") from exc

    missing = [name for name in REQUIRED_CLAIMS if payload.get(name) in (None, "", [])]
    if missing:
        raise _refuse("missing_claim", f"the id_token lacks required claims: {', '.join(missing)}")
    for name in ("sub", "jti"):
        if not isinstance(payload[name], str):
            raise _refuse("malformed_claim", f"id_token claim {name!r} is not a string")
    if payload["iss"] != issuer:
        raise _refuse("unknown_issuer", "the id_token's issuer changed under its signature")
    aud = payload["aud"]
    token_audiences = aud if isinstance(aud, list) else [aud]
    wanted = audiences if audiences is not None else cache.provider.audiences
    if not any(a in wanted for a in token_audiences):
        raise _refuse("wrong_audience", "the id_token is not addressed to this node (aud)")
    if len(token_audiences) > 1 and payload.get("azp") not in (None, *wanted):
        raise _refuse("wrong_audience", "the id_token's azp is not this node (OIDC Core §2)")
    _check_times(payload, policy, now)
    level = assurance_level(payload)
    if level < policy.min_assurance_level:
        raise _refuse(
            "assurance_too_low",
            f"the identity is proofed at IAL{level}, IAL{policy.min_assurance_level} is needed",
        )
    if nonce is not None and payload.get("nonce") != nonce:
        raise _refuse("nonce_mismatch", "the id_token's nonce is not the one sent")
    claims = read_claims(payload)  # refuses malformed demographics before the jti is used
    # Remembered for as long as the token could still be accepted: exp plus the leeway.
    remember_until = int(payload["exp"]) + policy.leeway_seconds + 1
    if not await replay.first_use(issuer, payload["jti"], remember_until):
        raise _refuse("replayed", "this id_token (iss + jti) has been presented before")
    return claims
