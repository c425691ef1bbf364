"""Verifying SMART Health Cards: signature, issuer trust, claims and revocation.

Only issuers configured as trusted are accepted, each with its JWKS given or fetched from
``iss + /.well-known/jwks.json`` (and, for keys with ``crlVersion``, its CRL from
``iss + /.well-known/crl/<kid>.json``). An unknown ``iss`` is refused without fetching
anything, so a card cannot make the verifier call an address of its choosing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from healthmesh.share import shc
from healthmesh.share.jwe import b64url_decode


class CardRejected(Exception):
    """A card that is not valid; the message says why (never the card's content)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedIssuer:
    iss: str
    jwks: dict[str, Any] | None = None  # None: fetched from iss/.well-known/jwks.json
    crls: dict[str, dict[str, Any]] = field(default_factory=dict)  # by kid; else fetched


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCard:
    iss: str
    kid: str
    nbf: float
    bundle: dict[str, Any]
    types: tuple[str, ...]
    rid: str | None
    revoked: bool  # its rid is on the issuer's revocation list
    expired: bool  # past its (optional) exp: authentic, but no longer to be relied on

    @property
    def valid(self) -> bool:
        return not self.revoked and not self.expired


def _is_revoked(crl: dict[str, Any], rid: str, nbf: float) -> bool:
    """``rid`` or ``rid.<epoch>`` in the list; the latter revokes cards issued before it."""
    for entry in crl.get("rids", []):
        if not isinstance(entry, str):
            continue
        listed, _, until = entry.partition(".")
        if listed == rid and (not until or (until.isdigit() and nbf < int(until))):
            return True
    return False


class CardVerifier:
    def __init__(
        self,
        trusted: Iterable[TrustedIssuer],
        *,
        http: httpx.AsyncClient | None = None,
        leeway: int = 60,
        cache_seconds: int = 300,
    ) -> None:
        self.trusted = {t.iss: t for t in trusted}
        self.http = http
        self.leeway = leeway
        self.cache_seconds = cache_seconds
        self._fetched: dict[str, tuple[float, Any]] = {}

    async def _get(self, url: str) -> Any:
        cached = self._fetched.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self.http is None:
            raise CardRejected(f"no copy of {url} and no HTTP client to fetch it")
        try:
            response = await self.http.get(url, timeout=10, follow_redirects=False)
            response.raise_for_status()
            value = orjson.loads(response.content)
        except (httpx.HTTPError, orjson.JSONDecodeError):
            raise CardRejected(f"could not fetch {url}") from None
        self._fetched[url] = (time.monotonic() + self.cache_seconds, value)
        return value

    async def _jwks(self, issuer: TrustedIssuer) -> dict[str, Any]:
        if issuer.jwks is not None:
            return issuer.jwks
        value = await self._get(f"{issuer.iss}/.well-known/jwks.json")
        if not isinstance(value, dict):
            raise CardRejected("the issuer's JWKS is not a JSON object")
        return value

    async def _crl(self, issuer: TrustedIssuer, kid: str) -> dict[str, Any]:
        if kid in issuer.crls:
            return issuer.crls[kid]
        value = await self._get(f"{issuer.iss}/.well-known/crl/{kid}.json")
        if not isinstance(value, dict):
            raise CardRejected("the issuer's revocation list is not a JSON object")
        return value

    async def verify(self, card: str) -> VerifiedCard:
        parts = card.strip().split(".")
        if len(parts) != 3:
            raise CardRejected("a card is a JWS in compact form (three parts)")
        try:
            header = orjson.loads(b64url_decode(parts[0]))
            claims = orjson.loads(shc.inflate(b64url_decode(parts[1])))
        except (ValueError, orjson.JSONDecodeError, shc.MalformedCard):
            raise CardRejected("the card's header or payload is malformed") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise CardRejected("the card's header or payload is malformed")
        if header.get("alg") != "ES256" or header.get("zip") != "DEF":
            raise CardRejected("a card's header is {alg: ES256, zip: DEF, kid}")
        kid, iss = header.get("kid"), claims.get("iss")
        if not isinstance(kid, str) or not isinstance(iss, str):
            raise CardRejected("the card names no kid or no iss")
        issuer = self.trusted.get(iss)
        if issuer is None:
            raise CardRejected(f"the issuer {iss!r} is not trusted here")
        jwk = next(
            (k for k in (await self._jwks(issuer)).get("keys", []) if k.get("kid") == kid), None
        )
        if jwk is None:
            raise CardRejected("the issuer publishes no key with the card's kid")
        try:
            key = ECKey.import_key(jwk)
        except (JoseError, ValueError, TypeError):
            raise CardRejected("the issuer's key is not a valid EC key") from None
        if key.thumbprint() != kid or jwk.get("crv") != "P-256":
            raise CardRejected("the issuer's key is not P-256 or its kid is not its thumbprint")
        try:
            jws.deserialize_compact(card.strip(), key, registry=shc.REGISTRY)
        except JoseError:
            raise CardRejected("the card's signature does not verify") from None
        return await self._claims(issuer, kid, jwk, claims)

    async def _claims(
        self, issuer: TrustedIssuer, kid: str, jwk: dict[str, Any], claims: dict[str, Any]
    ) -> VerifiedCard:
        nbf = claims.get("nbf")
        if not isinstance(nbf, int | float) or nbf > time.time() + self.leeway:
            raise CardRejected("the card has no nbf, or is not valid yet")
        exp = claims.get("exp")
        if exp is not None and not isinstance(exp, int | float):
            raise CardRejected("exp must be a number (epoch seconds)")
        vc = claims.get("vc")
        if not isinstance(vc, dict):
            raise CardRejected("the card has no vc claim")
        types = vc.get("type")
        if not isinstance(types, list) or shc.HEALTH_CARD not in types:
            raise CardRejected(f"vc.type must include {shc.HEALTH_CARD}")
        subject = vc.get("credentialSubject")
        bundle = subject.get("fhirBundle") if isinstance(subject, dict) else None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise CardRejected("vc.credentialSubject.fhirBundle must be a FHIR Bundle")
        if bundle.get("type") != "collection":
            raise CardRejected("a card's Bundle is of type collection")
        rid = vc.get("rid")
        revoked = False
        if isinstance(rid, str) and "crlVersion" in jwk:
            revoked = _is_revoked(await self._crl(issuer, kid), rid, float(nbf))
        return VerifiedCard(
            iss=issuer.iss,
            kid=kid,
            nbf=float(nbf),
            bundle=bundle,
            types=tuple(str(t) for t in types),
            rid=rid if isinstance(rid, str) else None,
            revoked=revoked,
            expired=exp is not None and exp < time.time(),
        )

    async def verify_qr(self, values: Sequence[str]) -> VerifiedCard:
        """A card from its numeric QR value(s), chunks in any order."""
        try:
            return await self.verify(shc.from_numeric(values))
        except shc.MalformedCard as error:
            raise CardRejected(str(error)) from None

    async def verify_file(self, body: object) -> list[VerifiedCard]:
        """Every card of a ``.smart-health-card`` file."""
        cards = body.get("verifiableCredential") if isinstance(body, dict) else None
        if not isinstance(cards, list) or not all(isinstance(c, str) for c in cards):
            raise CardRejected("a health card file is {verifiableCredential: [jws, …]}")
        return [await self.verify(c) for c in cards]
