"""Access tokens: RS256 JWTs issued for a grant, and their verification on every request.

Claims (SMART App Launch 2.2 §2.0.10 context, RFC 9068 shape): ``iss`` = ``aud`` = the FHIR
base URL, ``sub``, ``client_id``, ``scope``, ``jti``, ``iat``, ``exp`` (≤ 3600 s after iat),
``grant_id``, and when set ``patient``, ``fhirUser``, ``organization``, ``purpose_of_use``.

Verification (:class:`JwtVerifier`, the TokenVerifier port): the signature with RS256 only —
so ``alg: none``, unsigned and HS256-signed-with-the-public-key tokens fail before any claim
is read — by a published key named by ``kid``; then iss, aud, exp, nbf, iat with a small
leeway; then one SQL round trip: the token is not revoked, its grant is live, its client is
not disabled.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jwt import JWTClaimsRegistry
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.grant import AccessGrant, InvalidToken, Question
from healthmesh.auth.grants import Grant
from healthmesh.auth.keys import ALGORITHM, SigningKeys
from healthmesh.auth.settings import MAX_ACCESS_TOKEN_LIFETIME

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 §2.1 media type, not a secret)

# One round trip: no row when the grant is unknown; else whether all three are live, and
# (``{also}``) whatever else the caller asks in the same statement (verify_and_ask).
_LIVE = (
    "SELECT g.revoked_at IS NULL AND g.expires_at > now() - make_interval(secs => %(leeway)s)"
    " AND NOT c.disabled"
    " AND NOT EXISTS (SELECT 1 FROM auth_revoked_token r WHERE r.jti = %(jti)s){also}"
    " FROM auth_grant g JOIN auth_client c USING (client_id) WHERE g.grant_id = %(grant_id)s"
)
_LIVE_ONLY = _LIVE.format(also="")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    jti: str
    scope: str
    expires_in: int
    expires_at: int


class TokenIssuer:
    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys

    async def issue_access_token(
        self,
        grant: Grant,
        *,
        issuer: str,
        lifetime: int,
        scope: str | None = None,
        signing_key: tuple[str, RSAKey] | None = None,
    ) -> IssuedToken:
        """Sign an access token for ``grant`` (scope: the grant's, or the narrower one given).

        ``issuer`` is the FHIR base URL: it is both ``iss`` and ``aud``. A grant that ends
        sooner than ``lifetime`` caps the token (a backend grant lives exactly one token).
        ``signing_key``: from ``SigningKeys.signing_key()`` fetched beforehand, when what
        precedes must not be committed unless a token can then be signed (refresh rotation).
        """
        if not 0 < lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError(f"access token lifetime must be 1..{MAX_ACCESS_TOKEN_LIFETIME} s")
        kid, key = signing_key or await self.keys.signing_key()
        now = int(time.time())
        expires_at = min(now + lifetime, int(grant.expires_at.timestamp()))
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": issuer,
            "sub": grant.subject,
            "client_id": grant.client_id,
            "scope": scope if scope is not None else grant.scope,
            "jti": jti,
            "iat": now,
            "exp": expires_at,
            "grant_id": grant.grant_id,
        }
        for name, value in (
            ("patient", grant.patient),
            ("fhirUser", grant.fhir_user),
            ("organization", grant.organization),
            ("purpose_of_use", grant.purpose_of_use),
        ):
            if value is not None:
                claims[name] = value
        header = {"alg": ALGORITHM, "kid": kid, "typ": ACCESS_TOKEN_TYPE}
        token = jwt.encode(header, claims, key, algorithms=[ALGORITHM])
        return IssuedToken(token, jti, claims["scope"], expires_at - now, expires_at)


def _str(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidToken(f"the token's {name} claim is not a string")
    return value


def _grant_of(claims: dict[str, Any]) -> AccessGrant:
    return AccessGrant(
        client_id=claims["client_id"],
        scope=claims["scope"],
        patient=_str(claims, "patient"),
        fhir_user=_str(claims, "fhirUser"),
        organization=_str(claims, "organization"),
        purpose_of_use=_str(claims, "purpose_of_use"),
        token_id=claims["jti"],
        grant_id=claims["grant_id"],
        expires_at=int(claims["exp"]),
    )


class JwtVerifier:
    """The TokenVerifier implementation (healthmesh.auth.grant.TokenVerifier)."""

    def __init__(
        self, keys: SigningKeys, pool: Pool, *, leeway: int = 30, cache_size: int = 10_000
    ) -> None:
        self.keys = keys
        self.pool = pool
        self.leeway = leeway
        # An app sends the same token on many requests: the signature and claims are checked
        # once per (token, audience), and later uses only re-check exp (and, in SQL,
        # revocation). Bounded; the oldest entries go first. Tokens live only in memory here.
        self.cache_size = cache_size
        self._checked: dict[tuple[str, str], dict[str, Any]] = {}

    async def verify(self, bearer: str, *, audience: str) -> AccessGrant:
        return (await self.verify_with_claims(bearer, audience=audience))[0]

    async def verify_and_ask(
        self, bearer: str, *, audience: str, ask: Question
    ) -> tuple[AccessGrant, Any]:
        """:meth:`verify`, and the answer to ``ask(grant)`` — a scalar SQL sub-select and its
        named parameters, or None — from the same statement as the revocation check: one
        round trip where a second query would cost another (the FHIR API asks whether any
        Consent rule applies to the access, store/consent_sql.py)."""
        grant, _, answer = await self._verify(bearer, audience, ask)
        return grant, answer

    async def verify_with_claims(
        self, bearer: str, *, audience: str
    ) -> tuple[AccessGrant, dict[str, Any]]:
        """:meth:`verify`, also returning the token's claims (for introspection)."""
        grant, claims, _ = await self._verify(bearer, audience, None)
        return grant, claims

    async def _verify(
        self, bearer: str, audience: str, ask: Question | None
    ) -> tuple[AccessGrant, dict[str, Any], Any]:
        claims = await self.verify_signed(bearer, audience=audience)
        grant = _grant_of(claims)
        question = ask(grant) if ask is not None else None
        query, params = (
            _LIVE_ONLY,
            {
                "leeway": self.leeway,
                "jti": grant.token_id,
                "grant_id": grant.grant_id,
            },
        )
        if question is not None:
            query = _LIVE.format(also=f", ({question[0]})")
            params |= question[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        if row is None or not row[0]:
            raise InvalidToken("the access token has been revoked")
        return grant, claims, row[1] if question is not None else None

    async def verify_signed(self, bearer: str, *, audience: str) -> dict[str, Any]:
        """Signature and claims, without the database check (introspection adds its own)."""
        cached = self._checked.get((bearer, audience))
        if cached is not None:
            if cached["exp"] <= time.time() - self.leeway:
                del self._checked[(bearer, audience)]
                raise InvalidToken("the access token is not valid here: The token is expired")
            return cached
        claims = await self._check(bearer, audience)
        if self.cache_size > 0:
            if len(self._checked) >= self.cache_size:
                del self._checked[next(iter(self._checked))]
            self._checked[(bearer, audience)] = claims
        return claims

    async def _check(self, bearer: str, audience: str) -> dict[str, Any]:
        try:
            header = jws.extract_compact(bearer.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise InvalidToken("the access token is not a JWS compact serialisation") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"access tokens are signed {ALGORITHM}")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            # RFC 9068 §4: not some other JWT of ours (an id_token) presented as a bearer.
            raise InvalidToken(f"the token is not typed {ACCESS_TOKEN_TYPE}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("the access token has no kid")
        key = await self.keys.verification_key(kid)
        if key is None:
            raise InvalidToken("the access token was not signed by a key of this server")
        try:
            token = jwt.decode(bearer, key, algorithms=[ALGORITHM])
        except (JoseError, ValueError):
            raise InvalidToken("the access token's signature is not valid") from None
        claims: dict[str, Any] = dict(token.claims)
        registry = JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": audience},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(
                f"the access token is not valid here: {exc.description or exc.error}"
            ) from None
        for name in ("client_id", "scope", "grant_id", "jti"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken(f"the access token has no {name}")
        return claims
