"""Allow-listed identity providers and their signing keys (SPECS.md §3: "nested id_token
against an allow-list of identity providers' JWKS").

A provider is an issuer we trust for IAL2 identities, the audience(s) our node is known by
there, and where its keys are: a ``jwks_uri`` fetched with httpx and cached, or an inline
JWKS. Keys are looked up by ``kid``; an unknown kid triggers one refetch (the provider may
have rotated), at most once per ``min_refetch_seconds`` so that tokens with made-up kids
cannot turn us into a load generator against the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from healthmesh.auth.identity.errors import IdentityRefused

log = logging.getLogger(__name__)

# Asymmetric only: "none" and HS* are never accepted (an HS256 token "signed" with a
# provider's public key is the classic algorithm-confusion attack). joserfc 1.x leaves RS384
# and ES384 out of its recommended set, so the list is always passed explicitly.
ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "ES256", "ES384")
_KTY_OF_ALG = {"RS256": "RSA", "RS384": "RSA", "ES256": "EC", "ES384": "EC"}

VerifyKey = RSAKey | ECKey


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityProvider:
    """One allow-listed identity service (CLEAR, ID.me, Login.gov, the built-in test one)."""

    issuer: str
    audiences: tuple[str, ...]  # the client id(s) our node has at this provider
    display_name: str = ""
    jwks_uri: str | None = None
    jwks: Mapping[str, Any] | None = None  # inline JWKS, instead of jwks_uri
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS

    def __post_init__(self) -> None:
        if (self.jwks_uri is None) == (self.jwks is None):
            raise ValueError(f"provider {self.issuer}: give exactly one of jwks_uri and jwks")
        bad = set(self.algorithms) - set(ALLOWED_ALGORITHMS)
        if bad:
            raise ValueError(f"provider {self.issuer}: algorithms {sorted(bad)} are not allowed")
        if not self.audiences:
            raise ValueError(f"provider {self.issuer}: at least one audience is needed")


def _public_keys(jwks: Mapping[str, Any]) -> dict[str | None, VerifyKey]:
    """Usable verification keys by kid; private parts, symmetric and odd keys are dropped."""
    keys: dict[str | None, VerifyKey] = {}
    raw = jwks.get("keys")
    if not isinstance(raw, list):
        raise ValueError("a JWKS needs a 'keys' list (RFC 7517 §5)")
    for entry in raw:
        if not isinstance(entry, Mapping) or entry.get("kty") not in ("RSA", "EC"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            imported = KeySet.import_key_set({"keys": [dict(entry)]}).keys[0]
        except (JoseError, ValueError, TypeError):
            log.warning("identity provider JWKS: skipped a key that does not import")
            continue
        if isinstance(imported, RSAKey | ECKey):
            public = imported.as_dict(private=False)
            key = (
                RSAKey.import_key(public)
                if imported.key_type == "RSA"
                else ECKey.import_key(public)
            )
            keys[entry.get("kid")] = key
    return keys


def _declared_algs(jwks: Mapping[str, Any]) -> dict[str | None, str]:
    raw = jwks.get("keys")
    entries = raw if isinstance(raw, list) else []
    return {
        e.get("kid"): e["alg"]
        for e in entries
        if isinstance(e, Mapping) and isinstance(e.get("alg"), str)
    }


@dataclass(slots=True)
class _Cached:
    keys: dict[str | None, VerifyKey] = field(default_factory=dict)
    algs: dict[str | None, str] = field(default_factory=dict)  # kid -> the JWK's "alg"
    fetched_at: float | None = None  # monotonic seconds


class JwksCache:
    """One provider's keys: fetched on first need, refetched on an unknown kid (rate-limited)
    and when older than ``max_age_seconds``."""

    def __init__(
        self,
        provider: IdentityProvider,
        *,
        http: httpx.AsyncClient | None = None,
        min_refetch_seconds: float = 60.0,
        max_age_seconds: float = 3600.0,
    ) -> None:
        self.provider = provider
        self._http = http
        self.min_refetch_seconds = min_refetch_seconds
        self.max_age_seconds = max_age_seconds
        self._cached = _Cached()
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the JWKS was fetched (observable for tests, metrics)
        if provider.jwks is not None:
            self._cached = _Cached(
                _public_keys(provider.jwks), _declared_algs(provider.jwks), time.monotonic()
            )

    async def _fetch(self) -> None:
        assert self.provider.jwks_uri is not None
        self.fetches += 1
        self._cached.fetched_at = time.monotonic()  # a failed fetch also counts for the limit
        try:
            if self._http is not None:
                response = await self._http.get(self.provider.jwks_uri)
            else:
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.get(self.provider.jwks_uri)
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, Mapping):
                raise ValueError("the JWKS is not a JSON object")
            self._cached.keys = _public_keys(body)
            self._cached.algs = _declared_algs(body)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "identity provider %s: JWKS fetch failed (%s)",
                self.provider.issuer,
                type(exc).__name__,
            )

    def _stale(self, now: float) -> bool:
        at = self._cached.fetched_at
        return at is None or now - at > self.max_age_seconds

    def _may_refetch(self, now: float) -> bool:
        at = self._cached.fetched_at
        return at is None or now - at >= self.min_refetch_seconds

    def _pick(self, kid: str | None, alg: str) -> VerifyKey | None:
        """The key for ``kid`` (or, without a kid, the only key that fits) usable with
        ``alg``: the right key type, and the JWK's own "alg" (RFC 7517 §4.4) when it has one."""
        fitting = {
            k: key
            for k, key in self._cached.keys.items()
            if key.key_type == _KTY_OF_ALG[alg] and self._cached.algs.get(k, alg) == alg
        }
        if kid is not None:
            return fitting.get(kid)
        return next(iter(fitting.values())) if len(fitting) == 1 else None

    async def key_for(self, kid: str | None, alg: str) -> VerifyKey:
        """The provider's key for ``kid`` usable with ``alg``, or IdentityRefused."""
        if self.provider.jwks_uri is not None:
            async with self._lock:
                now = time.monotonic()
                if self._stale(now) or (self._pick(kid, alg) is None and self._may_refetch(now)):
                    await self._fetch()
        key = self._pick(kid, alg)
        if key is None:
            raise IdentityRefused(
                f"no signing key of {self.provider.issuer} matches the id_token's kid and alg",
                code="unknown_key",
            )
        return key


class IdentityProviders:
    """The allow-list: issuer -> provider and its key cache."""

    def __init__(
        self,
        providers: Iterable[IdentityProvider] = (),
        *,
        http: httpx.AsyncClient | None = None,
        min_refetch_seconds: float = 60.0,
    ) -> None:
        self._http = http
        self._min_refetch = min_refetch_seconds
        self._by_issuer: dict[str, JwksCache] = {}
        for provider in providers:
            self.add(provider)

    def add(self, provider: IdentityProvider) -> None:
        self._by_issuer[provider.issuer] = JwksCache(
            provider, http=self._http, min_refetch_seconds=self._min_refetch
        )

    def get(self, issuer: str) -> JwksCache | None:
        return self._by_issuer.get(issuer)

    def __iter__(self) -> Iterator[IdentityProvider]:
        return (cache.provider for cache in self._by_issuer.values())

    def __len__(self) -> int:
        return len(self._by_issuer)


def provider_from_dict(value: Mapping[str, Any]) -> IdentityProvider:
    """One provider from configuration JSON: {issuer, audiences|audience, jwks_uri|jwks, name}."""
    audiences = value.get("audiences", value.get("audience", []))
    if isinstance(audiences, str):
        audiences = [audiences]
    return IdentityProvider(
        issuer=str(value["issuer"]),
        audiences=tuple(str(a) for a in audiences),
        display_name=str(value.get("display_name", value.get("name", ""))),
        jwks_uri=value.get("jwks_uri"),
        jwks=value.get("jwks"),
        algorithms=tuple(value.get("algorithms", ALLOWED_ALGORITHMS)),
    )


def load_providers(path: Path) -> list[IdentityProvider]:
    """Providers from a JSON file: a list of provider objects (docs/identity.md)."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of identity providers")
    return [provider_from_dict(item) for item in data]
