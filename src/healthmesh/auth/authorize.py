"""Checking an authorization request (RFC 6749 §4.1.1, §4.1.2.1; SMART App Launch 2.2).

The order matters: until client_id and redirect_uri are known to belong together, nothing may
be sent to the redirect_uri (RFC 6749 §4.1.2.1, §10.15: no open redirector), so those errors
are pages for the person; every later error goes back to the app with its ``state``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from healthmesh.auth import pkce
from healthmesh.auth.clients import Client
from healthmesh.auth.scope_sets import not_covered
from healthmesh.auth.scope_words import context_of, describe

# A patient authorizing an app cannot grant system/ scopes: those are for backend services.
_USER_CONTEXTS = ("patient", "user")


class ClientDirectory(Protocol):
    async def get(self, client_id: str) -> Client | None:
        """The registered client with this id (ClientStore), or None."""
        ...


class LaunchContexts(Protocol):
    async def patient_of_launch(self, launch: str) -> str | None:
        """The Patient id a live launch id carries, or None."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizeRequest:
    client: Client
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_challenge: str
    nonce: str | None
    launch_patient: str | None


@dataclass(frozen=True, slots=True)
class ShowError:
    """An error for the person at the browser; nothing is sent to any redirect URI."""

    title: str
    message: str
    status: int = 400


@dataclass(frozen=True, slots=True)
class RedirectError:
    """An RFC 6749 §4.1.2.1 error sent back to the app's (verified) redirect URI."""

    redirect_uri: str
    error: str
    description: str
    state: str | None

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        return with_query(self.redirect_uri, params)


def with_query(uri: str, params: Mapping[str, str]) -> str:
    """Add parameters to a redirect URI, keeping any query it has (RFC 6749 §3.1.2)."""
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name, ())
    return values[0] if len(values) == 1 else None


def grantable_scopes(requested: str, client: Client) -> tuple[str, ...]:
    """The requested scopes this flow can grant to this client, in request order, deduplicated.

    RFC 6749 §3.3: the server may grant less than requested. Dropped: system/ scopes, scopes the
    client may not have, and scopes this server does not understand (nothing is granted that
    the consent page could not explain).
    """
    kept: list[str] = []
    for scope in requested.split():
        if scope in kept or not describe(scope).known:
            continue
        context = context_of(scope)
        if context is not None and context not in _USER_CONTEXTS:
            continue
        if not_covered(client.scope, scope):
            continue
        kept.append(scope)
    return tuple(kept)


async def check_request(
    params: Mapping[str, Sequence[str]],
    *,
    clients: ClientDirectory,
    launches: LaunchContexts,
    audience: str,
) -> AuthorizeRequest | ShowError | RedirectError:
    # Repeated parameters are refused (RFC 6749 §3.1: "MUST NOT be included more than once").
    repeated = sorted(name for name, values in params.items() if len(values) > 1)
    client_id = _single(params, "client_id")
    if not client_id:
        return ShowError("This app's sign-in link is broken", "The request names no client_id.")
    client = await clients.get(client_id)
    if client is None or client.disabled or "authorization_code" not in client.grant_types:
        return ShowError(
            "Unknown app",
            "The app that sent you here is not registered with this server, or was disabled.",
        )
    # SMART App Launch 2.2 makes redirect_uri required; it must equal a registered one
    # exactly (no prefix or pattern matching: RFC 9700 §4.1.1).
    redirect_uri = _single(params, "redirect_uri")
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        return ShowError(
            "This app's sign-in link is not valid",
            "The address the app asked to return you to is not one it registered, so this "
            "server will not send you there.",
        )
    state = _single(params, "state")

    def refuse(error: str, description: str) -> RedirectError:
        return RedirectError(redirect_uri, error, description, state)

    if repeated:
        return refuse("invalid_request", "repeated parameters: " + ", ".join(repeated))
    if _single(params, "response_type") != "code":
        return refuse("unsupported_response_type", "response_type must be code")
    if not state:
        return refuse("invalid_request", "state is required (SMART App Launch 2.2)")
    aud = _single(params, "aud")
    if aud is None or aud.rstrip("/") != audience.rstrip("/"):
        return refuse("invalid_request", "aud must be this server's FHIR base URL")
    problem = pkce.challenge_problem(
        _single(params, "code_challenge"), _single(params, "code_challenge_method")
    )
    if problem:
        return refuse("invalid_request", problem)
    scopes = grantable_scopes(_single(params, "scope") or "", client)
    if not scopes:
        return refuse("invalid_scope", "none of the requested scopes can be granted to this app")
    launch_patient = None
    launch = _single(params, "launch")
    if launch is not None:
        launch_patient = await launches.patient_of_launch(launch)
        if launch_patient is None:
            return refuse("invalid_request", "the launch id is unknown or expired")
    return AuthorizeRequest(
        client=client,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        code_challenge=str(_single(params, "code_challenge")),
        nonce=_single(params, "nonce"),
        launch_patient=launch_patient,
    )
