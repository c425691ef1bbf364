"""Dynamic client registration with a software statement (RFC 7591; SPECS.md §2).

An app may register itself only with a software statement signed by an app library this node
trusts (the CMS app library in the ecosystem): a JWT whose claims carry the app's metadata and
``extensions.cms_app.library_status == "active"``. Verifying it is pure: this module takes the
request body, the trusted libraries and their keys, and returns the client metadata to store,
or raises :class:`RegistrationRefused` with the RFC 7591 §3.2.2 error code.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

# SPECS.md §2-3: the CMS worked examples sign ES384; RS384 is allowed too. Listed explicitly:
# joserfc does not accept either by default, and nothing else (none, HS*) must ever pass.
STATEMENT_ALGORITHMS = ("ES384", "RS384")
AUTH_METHODS = ("none", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
LEEWAY = 60  # seconds of clock skew tolerated on iat/exp/nbf


@dataclass(frozen=True, slots=True, kw_only=True)
class AppLibrary:
    """An issuer of software statements this node trusts, with its keys."""

    issuer: str
    jwks: Mapping[str, Any] | None = None  # inline JWK Set
    jwks_uri: str | None = None  # fetched (and cached) when jwks is not given


class RegistrationRefused(Exception):
    """An RFC 7591 §3.2.2 error: ``error`` is the code, the message its description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientMetadata:
    """The metadata of a client to create (RFC 7591 §2), verified."""

    client_name: str
    software_id: str
    software_version: str | None
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    scope: str | None
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    library: str  # the issuer of the software statement
    software_statement: str = field(repr=False)

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"  # noqa: S105 - a method name

    def response(self, client_id: str, issued_at: int) -> dict[str, Any]:
        """RFC 7591 §3.2.1: the client information, with the statement returned unmodified."""
        body: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": issued_at,
            "client_name": self.client_name,
            "software_id": self.software_id,
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": list(self.grant_types),
            "response_types": ["code"] if "authorization_code" in self.grant_types else [],
            "software_statement": self.software_statement,
        }
        if self.software_version:
            body["software_version"] = self.software_version
        if self.scope:
            body["scope"] = self.scope
        if self.jwks is not None:
            body["jwks"] = dict(self.jwks)
        if self.jwks_uri:
            body["jwks_uri"] = self.jwks_uri
        return body


def _statement_of(body: object) -> tuple[Mapping[str, Any], str]:
    if not isinstance(body, Mapping):
        raise RegistrationRefused("invalid_client_metadata", "the body must be a JSON object")
    statement = body.get("software_statement")
    if not isinstance(statement, str) or not statement:
        raise RegistrationRefused(
            "invalid_software_statement",
            "software_statement is required: a JWT signed by a trusted app library",
        )
    return body, statement


def statement_issuer(body: object) -> str:
    """The unverified ``iss`` of the statement, to choose which library's keys to verify with."""
    _, statement = _statement_of(body)
    try:
        claims = json.loads(jws.extract_compact(statement.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise RegistrationRefused(
            "invalid_software_statement", "software_statement is not a compact JWT"
        ) from exc
    iss = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(iss, str) or not iss:
        raise RegistrationRefused("invalid_software_statement", "software_statement has no iss")
    return iss


def library_for(issuer: str, libraries: Sequence[AppLibrary]) -> AppLibrary:
    for library in libraries:
        if library.issuer == issuer:
            return library
    raise RegistrationRefused(
        "unapproved_software_statement",
        "the software statement was not issued by an app library this server trusts",
    )


def _verified_claims(statement: str, keys: KeySet, issuer: str, now: int) -> dict[str, Any]:
    try:
        token = jwt.decode(statement, keys, algorithms=list(STATEMENT_ALGORITHMS))
    except (JoseError, ValueError) as exc:
        # Wrong key, bad signature, alg none/HS*, unknown kid: all one answer to the caller.
        raise RegistrationRefused(
            "invalid_software_statement",
            "the software statement's signature does not verify with the app library's keys"
            " (ES384 or RS384)",
        ) from exc
    claims = dict(token.claims)
    if claims.get("iss") != issuer:
        raise RegistrationRefused("invalid_software_statement", "unexpected iss")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if value is not None and not isinstance(value, int | float):
            raise RegistrationRefused("invalid_software_statement", f"{name} must be a number")
    if isinstance(exp, int | float) and exp + LEEWAY < now:
        raise RegistrationRefused("invalid_software_statement", "the software statement expired")
    if isinstance(nbf, int | float) and nbf - LEEWAY > now:
        raise RegistrationRefused("invalid_software_statement", "the statement is not yet valid")
    if isinstance(iat, int | float) and iat - LEEWAY > now:
        raise RegistrationRefused("invalid_software_statement", "iat is in the future")
    return claims


def _library_status(claims: Mapping[str, Any]) -> object:
    extensions = claims.get("extensions")
    cms_app = extensions.get("cms_app") if isinstance(extensions, Mapping) else None
    return cms_app.get("library_status") if isinstance(cms_app, Mapping) else None


def _redirect_uri_problem(uri: object) -> str | None:
    if not isinstance(uri, str) or not uri:
        return "each redirect URI must be a non-empty string"
    parts = urllib.parse.urlsplit(uri)
    if parts.fragment or "#" in uri:
        return f"redirect URI {uri!r} must not contain a fragment (RFC 6749 §3.1.2)"
    if parts.scheme == "https" and parts.netloc:
        return None
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return None  # native apps' loopback redirects (RFC 8252 §7.3)
    if "." in parts.scheme:
        return None  # a native app's private-use scheme, reverse-DNS form (RFC 8252 §7.1)
    return f"redirect URI {uri!r} must be https (or http on loopback, or a reverse-DNS scheme)"


def _strings(value: object, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistrationRefused("invalid_client_metadata", f"{name} must be a list of strings")
    return tuple(value)


def _public_jwks(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not isinstance(value.get("keys"), list):
        raise RegistrationRefused("invalid_client_metadata", "jwks must be a JWK Set {keys: [...]}")
    for key in value["keys"]:
        if not isinstance(key, Mapping) or any(p in key for p in ("d", "p", "q", "k")):
            raise RegistrationRefused("invalid_client_metadata", "jwks must hold public keys only")
    try:
        KeySet.import_key_set(json.loads(json.dumps(value)))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise RegistrationRefused("invalid_client_metadata", "jwks holds an invalid key") from exc
    return value


def client_metadata(
    body: object, library: AppLibrary, keys: KeySet, *, now: int | None = None
) -> ClientMetadata:
    """Verify a registration request against its library's keys; the metadata to store.

    RFC 7591 §2.3: values in the software statement take precedence over the same values
    sent as plain JSON next to it.
    """
    request, statement = _statement_of(body)
    claims = _verified_claims(statement, keys, library.issuer, int(now or time.time()))
    if _library_status(claims) != "active":
        raise RegistrationRefused(
            "unapproved_software_statement",
            "the app library does not list this app as active (extensions.cms_app.library_status)",
        )
    merged: dict[str, Any] = {k: v for k, v in request.items() if k != "software_statement"}
    merged.update(claims)

    software_id = merged.get("software_id")
    if not isinstance(software_id, str) or not software_id:
        raise RegistrationRefused("invalid_software_statement", "software_id is required")

    method = merged.get("token_endpoint_auth_method")
    if method not in AUTH_METHODS:
        raise RegistrationRefused(
            "invalid_client_metadata",
            "token_endpoint_auth_method must be one of: " + ", ".join(AUTH_METHODS),
        )

    jwks = merged.get("jwks")
    jwks_uri = merged.get("jwks_uri")
    if jwks is not None and jwks_uri is not None:
        raise RegistrationRefused(
            "invalid_client_metadata", "give jwks or jwks_uri, not both (RFC 7591 §2)"
        )
    if jwks is None and jwks_uri is None:
        raise RegistrationRefused("invalid_software_statement", "jwks_uri or jwks is required")
    if jwks_uri is not None and (
        not isinstance(jwks_uri, str) or urllib.parse.urlsplit(jwks_uri).scheme != "https"
    ):
        raise RegistrationRefused("invalid_client_metadata", "jwks_uri must be an https URL")
    checked_jwks = None if jwks is None else _public_jwks(jwks)

    grant_types = _strings(merged.get("grant_types", ["authorization_code"]), "grant_types")
    unknown = [g for g in grant_types if g not in GRANT_TYPES]
    if unknown or not grant_types:
        raise RegistrationRefused(
            "invalid_client_metadata",
            "grant_types may hold only: " + ", ".join(GRANT_TYPES),
        )
    if "client_credentials" in grant_types and method != "private_key_jwt":
        raise RegistrationRefused(
            "invalid_client_metadata", "client_credentials needs private_key_jwt authentication"
        )
    response_types = _strings(merged.get("response_types", ["code"]), "response_types")
    if any(r != "code" for r in response_types):
        raise RegistrationRefused("invalid_client_metadata", "response_types may hold only code")

    redirect_uris = _strings(merged.get("redirect_uris", []), "redirect_uris")
    if "authorization_code" in grant_types and not redirect_uris:
        raise RegistrationRefused(
            "invalid_redirect_uri", "redirect_uris is required for the authorization_code grant"
        )
    for uri in redirect_uris:
        problem = _redirect_uri_problem(uri)
        if problem:
            raise RegistrationRefused("invalid_redirect_uri", problem)

    scope = merged.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise RegistrationRefused("invalid_client_metadata", "scope must be a string")
    name = merged.get("client_name", software_id)
    version = merged.get("software_version")
    if not isinstance(name, str) or not name.strip():
        raise RegistrationRefused("invalid_client_metadata", "client_name must be a string")
    return ClientMetadata(
        client_name=name.strip(),
        software_id=software_id,
        software_version=version if isinstance(version, str) else None,
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=str(method),
        grant_types=grant_types,
        scope=scope,
        jwks=checked_jwks,
        jwks_uri=jwks_uri,
        library=library.issuer,
        software_statement=statement,
    )
