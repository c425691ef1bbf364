"""HTTP for the authorization server: discovery, JWKS, token, introspection, revocation.

All under the FHIR base (``/fhir/.well-known/…``, ``/fhir/auth/…``) and none needs a bearer
token. OAuth endpoints answer RFC 6749 §5.2 JSON errors, never an OperationOutcome; token
responses carry ``Cache-Control: no-store`` and ``Pragma: no-cache`` (§5.1); CORS lets
browser apps call them (no cookies are involved, so any origin may).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthmesh.auth.clients import Client, valid_client_id
from healthmesh.auth.discovery import openid_configuration, smart_configuration
from healthmesh.auth.errors import OAuthError
from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.introspection import introspect, revoke
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings
from healthmesh.privacy import audit
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024  # an assertion with a nested id_token is a few KiB
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status, {**CORS, **(headers or {})}, media_type="application/json"
    )


def oauth_error(error: OAuthError) -> Response:
    headers = dict(NO_STORE)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return json_response(error.body(), error.status, headers)


async def read_form(request: Request) -> dict[str, str]:
    """The form parameters, each at most once (RFC 6749 §3.2: no repeated parameters)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM_TYPE:
        raise OAuthError("invalid_request", f"the body must be {FORM_TYPE}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "the request body is too large")
        chunks.append(chunk)
    try:
        pairs = parse_qsl(b"".join(chunks).decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not valid form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise OAuthError("invalid_request", "the form holds a NUL character")
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} appears more than once")
        form[name] = value
    return form


Endpoint = Callable[[Request], Awaitable[Response]]


def mount_auth(app: Starlette, settings: Settings, repository: Repository) -> AuthServer:
    """Add the authorization server's routes and start-up to ``app``; return the server."""
    auth = AuthServer(repository.pool, settings.auth)
    app.state.auth = auth

    def base_url(request: Request) -> str:
        # The issuer is the FHIR base URL. Behind a proxy, set HEALTHMESH_BASE_URL: otherwise
        # the Host header decides the audience that assertions must name.
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    def remote(request: Request) -> str | None:
        return request.client.host if request.client else None

    def guarded(endpoint: Endpoint, method: str) -> Endpoint:
        """OPTIONS preflight, 405 for other methods (rather than falling through to the FHIR
        catch-all), RFC 6749 errors, and no 500 without a log line (and no body in it)."""

        async def run(request: Request) -> Response:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers=CORS)
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                error = OAuthError("invalid_request", f"use {method}", status=405)
                response = oauth_error(error)
                response.headers["Allow"] = f"{method}, OPTIONS"
                return response
            try:
                return await endpoint(request)
            except OAuthError as error:
                return oauth_error(error)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return oauth_error(
                    OAuthError("server_error", "internal error; it has been logged", status=500)
                )

        return run

    async def token(request: Request) -> Response:
        form = await read_form(request)
        hint = _client_hint(form)
        await auth.rate_limiter.hit(client_id=hint, address=remote(request))
        base = base_url(request)
        grant_type = form.get("grant_type", "")
        try:
            body = await auth.token_endpoint.handle(
                form, issuer=base, token_url=f"{base}/auth/token", remote=remote(request)
            )
        except OAuthError as refused:
            # Refusals are audited (breach signals count them); the reason is the one the
            # client gets, never the assertion, code or token (privacy/audit.py).
            await _audit_token(
                audit.token_event(
                    client_id=hint,
                    issued=False,
                    grant_type=grant_type,
                    reason=refused.description,
                    address=remote(request),
                    node=base,
                )
            )
            raise
        issued = AccessGrant(
            client_id=hint or "",
            scope=str(body.get("scope", "")),
            patient=body.get("patient"),
        )
        await _audit_token(
            audit.token_event(
                client_id=hint,
                issued=True,
                grant_type=grant_type,
                grant=issued,
                address=remote(request),
                node=base,
            )
        )
        return json_response(body, headers=NO_STORE)

    async def _audit_token(event: dict[str, Any]) -> None:
        await app.state.auditor.record([event])  # api/auditing.py; set by create_app

    async def authenticated(request: Request, endpoint: str) -> tuple[dict[str, str], Client, str]:
        """For introspection and revocation: the form, the calling client, the issuer."""
        form = await read_form(request)
        await auth.rate_limiter.hit(client_id=_client_hint(form), address=remote(request))
        base = base_url(request)
        client, _ = await auth.authenticator.authenticate(
            form, audiences=(f"{base}/auth/token", f"{base}/auth/{endpoint}")
        )
        return form, client, base

    async def introspect_endpoint(request: Request) -> Response:
        form, client, base = await authenticated(request, "introspect")
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        return json_response(await introspect(auth, token, client, issuer=base), headers=NO_STORE)

    async def revoke_endpoint(request: Request) -> Response:
        form, client, base = await authenticated(request, "revoke")
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        await revoke(auth, token, client, issuer=base)
        return Response(status_code=200, headers={**CORS, **NO_STORE})

    async def jwks(request: Request) -> Response:
        return json_response(await auth.keys.jwks(), headers={"Cache-Control": "max-age=60"})

    async def smart(request: Request) -> Response:
        return json_response(
            smart_configuration(base_url(request), auth.token_endpoint.grant_types)
        )

    async def openid(request: Request) -> Response:
        return json_response(
            openid_configuration(base_url(request), auth.token_endpoint.grant_types)
        )

    every = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    routes = [
        Route("/fhir/.well-known/smart-configuration", guarded(smart, "GET"), methods=every),
        Route("/fhir/.well-known/openid-configuration", guarded(openid, "GET"), methods=every),
        Route("/fhir/.well-known/jwks.json", guarded(jwks, "GET"), methods=every),
        Route("/fhir/auth/token", guarded(token, "POST"), methods=every),
        Route("/fhir/auth/introspect", guarded(introspect_endpoint, "POST"), methods=every),
        Route("/fhir/auth/revoke", guarded(revoke_endpoint, "POST"), methods=every),
    ]
    # Before the FHIR catch-all /fhir/{path}, which would take them for resource types.
    app.router.routes[0:0] = routes

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):  # opens the repository's pool
            await auth.start()
            maintenance = asyncio.create_task(auth.maintain())
            try:
                yield
            finally:
                maintenance.cancel()
                await auth.close()

    app.router.lifespan_context = lifespan
    return auth


def _client_hint(form: dict[str, str]) -> str | None:
    """The client id a request claims, for rate limiting only (not yet authenticated)."""
    from healthmesh.auth.assertions import unverified_subject

    claimed = form.get("client_id")
    if form.get("client_assertion"):
        claimed = unverified_subject(form["client_assertion"]) or claimed
    # Malformed ids are no client at all; the per-address bucket still counts them.
    return claimed if claimed and valid_client_id(claimed) else None
