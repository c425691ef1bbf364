"""HTTP for the authorization-code flow: authorize, login callback, consent, launch, register.

Browser-facing endpoints answer with pages (auth_pages) or redirects to the app's verified
redirect_uri; ``/auth/register`` and ``/auth/launch`` are JSON APIs with RFC 6749/7591 errors.
The browser is recognised by one HttpOnly, SameSite=Lax cookie holding a random secret; the
database keeps only its hash (code_flow.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from healthmesh.api.auth_pages import consent_page, message_page
from healthmesh.auth import opaque
from healthmesh.auth.app_libraries import LibraryKeys, register
from healthmesh.auth.authcode_settings import LoginProvider
from healthmesh.auth.authorize import AuthorizeRequest, RedirectError, ShowError, check_request
from healthmesh.auth.code_flow import CodeFlow, Refused
from healthmesh.auth.grant import InvalidToken
from healthmesh.auth.oidc_login import resolve_issuer
from healthmesh.auth.registration import RegistrationRefused
from healthmesh.auth.scope_sets import covers
from healthmesh.auth.scope_words import describe
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings
from healthmesh.store.authorizations import AuthorizationStore
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)
BROWSER_COOKIE = "hm_browser"
COOKIE_PATH = "/fhir/auth"
MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# Who may mint an EHR launch: a client that may read any Patient (an EHR or portal system).
LAUNCH_SCOPES = ("system/Patient.r", "user/Patient.r")
PURGE_EVERY = 300.0  # seconds between sweeps of expired pending requests, codes, launches

Page = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, NO_STORE, media_type="application/json")


def _oauth_json(error: str, description: str, status: int = 400) -> Response:
    return _json({"error": error, "error_description": description}, status)


async def _form(request: Request) -> list[tuple[str, str]]:
    """A urlencoded body as pairs (names may repeat: the consent form's checkboxes do)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM_TYPE:
        raise Refused("Unexpected form", f"The form must be sent as {FORM_TYPE}.", status=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused("Form too large", "The form is larger than allowed.", status=413)
    try:
        return parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise Refused("Unreadable form", "The form could not be read.") from None


def _redirect(location: str) -> Response:
    # 303: after a POST the browser follows with a GET (RFC 9110 §15.4.4); fine after GETs too.
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


def mount_authorize(
    app: Starlette, settings: Settings, repository: Repository, auth: AuthServer
) -> CodeFlow:
    """Add the flow's routes to ``app`` and the authorization_code grant to ``auth``."""
    flow_settings = settings.authcode
    if flow_settings.login is None and settings.test_identity_provider:
        # Users log in at the built-in TEST identity provider on this origin, as its built-in
        # public client (synthetic people only; healthmesh.auth.identity.test_idp).
        from healthmesh.auth.identity.test_idp import BUILTIN_CLIENT, MOUNT_PATH

        login = LoginProvider(issuer=MOUNT_PATH, client_id=BUILTIN_CLIENT)
        flow_settings = dataclasses.replace(flow_settings, login=login)
    flow = CodeFlow(auth, AuthorizationStore(repository.pool), flow_settings, repository)
    library_keys = LibraryKeys()
    app.state.code_flow = flow

    def base_url(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    def origin(request: Request) -> str:
        parts = urlsplit(base_url(request))
        return f"{parts.scheme}://{parts.netloc}"

    def callback(request: Request) -> str:
        return f"{base_url(request)}/auth/callback"

    def page(endpoint: Page) -> Page:
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Refused as refused:
                return message_page(refused.title, refused.message, status=refused.status)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return message_page(
                    "Something went wrong",
                    "The server hit an error; it has been logged. Go back to the app and try "
                    "again.",
                    status=500,
                )

        return run

    async def authorize(request: Request) -> Response:
        if request.method == "POST":
            pairs = await _form(request)
            params: dict[str, list[str]] = {}
            for name, value in pairs:
                params.setdefault(name, []).append(value)
        else:
            params = parse_qs(request.url.query, keep_blank_values=True)
        checked = await check_request(
            params, clients=auth.clients, launches=flow, audience=base_url(request)
        )
        if isinstance(checked, ShowError):
            return message_page(checked.title, checked.message, status=checked.status)
        if isinstance(checked, RedirectError):
            return _redirect(checked.location())
        return await begin(request, checked)

    async def begin(request: Request, checked: AuthorizeRequest) -> Response:
        browser = request.cookies.get(BROWSER_COOKIE) or opaque.mint()
        location = await flow.begin(
            checked, browser=browser, origin=origin(request), callback=callback(request)
        )
        response = _redirect(location)
        response.set_cookie(
            BROWSER_COOKIE,
            browser,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",  # sent on the provider's top-level redirect back, not on cross-site POSTs
            secure=base_url(request).startswith("https://"),
        )
        return response

    async def login_callback(request: Request) -> Response:
        query = request.query_params
        # The login is audited either way (privacy/audit.py login_event): who, how, outcome.
        method = "idp"
        if flow.login is not None:
            method = f"idp:{resolve_issuer(flow.login.provider, origin(request))}"
        auditor = app.state.auditor
        address = request.client.host if request.client else None
        try:
            result = await flow.finish_login(
                state=query.get("state"),
                code=query.get("code"),
                error=query.get("error"),
                browser=request.cookies.get(BROWSER_COOKIE),
                origin=origin(request),
                callback=callback(request),
            )
        except Refused as refused:
            await auditor.login(None, False, method, address, refused.title)
            raise
        if isinstance(result, RedirectError):
            await auditor.login(None, False, method, address, "the user did not sign in")
            return _redirect(result.location())
        await auditor.login(result.fhir_user, True, method, address, None, result.client_id)
        return _redirect(f"{base_url(request)}/auth/consent?request={result.id}")

    async def patient_name(patient: str | None) -> str:
        """The signed-in person as the consent page names them: their record's name."""
        found = await repository.read_current("Patient", patient) if patient else None
        if found is not None and found.content is not None:
            resource = orjson.loads(found.content)
            for name in resource.get("name") or []:
                given = " ".join(name.get("given") or [])
                text = name.get("text") or f"{given} {name.get('family', '')}".strip()
                if text:
                    return str(text)
        return f"Patient/{patient}"

    async def consent(request: Request) -> Response:
        browser = request.cookies.get(BROWSER_COOKIE)
        if request.method == "GET":
            shown = await flow.show_consent(request.query_params.get("request", ""), browser)
            return consent_page(
                app_name=shown.client_name,
                scopes=[describe(s) for s in shown.pending.scope.split()],
                action=f"{base_url(request)}/auth/consent",
                request_id=shown.pending.id,
                csrf=shown.csrf,
                who=await patient_name(shown.pending.patient),
            )
        pairs = await _form(request)
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name != "scope":
                fields.setdefault(name, value)
        location = await flow.decide(
            request_id=fields.get("request", ""),
            browser=browser,
            csrf=fields.get("csrf"),
            approve=fields.get("decision") == "approve",
            chosen=[value for name, value in pairs if name == "scope"],
        )
        return _redirect(location)

    async def launch(request: Request) -> Response:
        """POST [base]/auth/launch {patient}: an EHR-launch id for an authenticated operator."""
        header = request.headers.get("authorization", "")
        scheme, _, bearer = header.partition(" ")
        if scheme.lower() != "bearer" or not bearer:
            return _oauth_json("invalid_token", "a bearer token is required", 401)
        try:
            grant = await auth.verifier.verify(bearer.strip(), audience=base_url(request))
        except InvalidToken as invalid:
            return _oauth_json(invalid.error, invalid.reason, 401)
        if not any(covers(s, wanted) for s in grant.scope.split() for wanted in LAUNCH_SCOPES):
            return _oauth_json(
                "insufficient_scope",
                "minting a launch needs system/Patient.r or user/Patient.r",
                403,
            )
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        patient = body.get("patient") if isinstance(body, dict) else None
        if not isinstance(patient, str) or not patient:
            return _oauth_json("invalid_request", 'the body must be JSON {"patient": "<id>"}')
        found = await repository.read_current("Patient", patient)
        if found is None or found.deleted:
            return _oauth_json("invalid_request", f"Patient/{patient} is not known", 404)
        launch_id, lifetime = await flow.mint_launch(patient, issued_by=grant.client_id)
        return _json({"launch": launch_id, "patient": patient, "expires_in": lifetime}, 201)

    async def register_client(request: Request) -> Response:
        """RFC 7591 §3: POST a JSON client metadata document with a software_statement."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _oauth_json("invalid_client_metadata", "the body must be application/json")
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return _oauth_json("invalid_client_metadata", "the registration request is too large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _oauth_json("invalid_client_metadata", "the body is not valid JSON")
        try:
            registered = await register(
                body,
                libraries=settings.authcode.app_libraries,
                keys=library_keys,
                clients=auth.clients,
            )
        except RegistrationRefused as refused:
            return _oauth_json(refused.error, refused.description)
        return _json(registered, 201)

    async def json_api(endpoint: Page, request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return _oauth_json("server_error", "internal error; it has been logged", 500)

    async def launch_api(request: Request) -> Response:
        return await json_api(launch, request)

    async def register_api(request: Request) -> Response:
        return await json_api(register_client, request)

    def only(methods: tuple[str, ...], endpoint: Page) -> Page:
        """405 for other methods, rather than falling through to the FHIR catch-all."""

        async def run(request: Request) -> Response:
            if request.method not in methods:
                allow = ", ".join(methods)
                return Response(status_code=405, headers={"Allow": allow, **NO_STORE})
            return await endpoint(request)

        return run

    every = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    routes = [
        Route("/fhir/auth/authorize", only(("GET", "POST"), page(authorize)), methods=every),
        Route("/fhir/auth/callback", only(("GET",), page(login_callback)), methods=every),
        Route("/fhir/auth/consent", only(("GET", "POST"), page(consent)), methods=every),
        Route("/fhir/auth/launch", only(("POST",), launch_api), methods=every),
        Route("/fhir/auth/register", only(("POST",), register_api), methods=every),
    ]
    # Before the FHIR catch-all /fhir/{path}, which would take them for resource types.
    app.router.routes[0:0] = routes

    inner = app.router.lifespan_context

    async def purge_expired() -> None:
        """Drop expired pending requests, launches and old codes, now and then."""
        while True:
            try:
                await flow.store.purge()
            except Exception:  # the next round tries again; a failed purge harms nothing
                log.exception("purging expired authorization requests failed")
            await asyncio.sleep(PURGE_EVERY)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):
            purger = asyncio.create_task(purge_expired())
            try:
                yield
            finally:
                purger.cancel()
                await flow.close()
                await library_keys.close()

    app.router.lifespan_context = lifespan
    return flow
