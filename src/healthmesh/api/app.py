"""The ASGI application: the FHIR API at /fhir, a health probe at /health."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from healthmesh.api.auditing import AuditFailed, Auditor
from healthmesh.api.auth_routes import mount_auth
from healthmesh.api.authorize_routes import mount_authorize
from healthmesh.api.checkin_routes import mount_checkin
from healthmesh.api.export_routes import mount_export
from healthmesh.api.parsing import (
    parse_body,
    path_segments,
    read_body,
    request_base,
    response_type,
    to_fhir_request,
)
from healthmesh.api.render import StoredResponse, error_response, render
from healthmesh.api.share_routes import mount_share
from healthmesh.auth.federation import NodeIdentifier
from healthmesh.auth.grant import AccessGrant, InvalidToken, TokenVerifier
from healthmesh.auth.policy import visibility_for
from healthmesh.config import Settings
from healthmesh.fhir.errors import (
    FhirError,
    Gone,
    Issue,
    NotFound,
    Unauthorized,
    operation_outcome,
)
from healthmesh.interactions import transaction
from healthmesh.interactions.context import (
    FhirRequest,
    FhirResult,
    check_id,
    check_type,
    check_version,
)
from healthmesh.interactions.dispatch import READ_METHODS, dispatch
from healthmesh.interactions.reindex import SearchParameterWatch
from healthmesh.interactions.relabel import needs_relabel, relabel
from healthmesh.privacy.appender import AuditAppender
from healthmesh.share.content import OwnRecordBundles
from healthmesh.store import consent_sql, key_sealing
from healthmesh.store.access import Visibility
from healthmesh.store.migrate import migrate
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)


async def _seal_keys(repository: Repository) -> None:
    """Private keys at rest (store/key_sealing.py): sealed with the key-encryption key when
    the node has one (those written before it was set, now), else a warning."""
    if key_sealing.passphrase() is None:
        log.warning(key_sealing.UNSEALED_WARNING)
        return
    async with repository.pool.connection() as conn, conn.transaction():
        await key_sealing.reseal_all(conn)


AUDIT_OFF_WARNING = (
    "AUDITING IS OFF (HEALTHMESH_AUDIT=off): no access, change, token or login is recorded."
    " For benchmarks and nodes audited elsewhere only, never in production (docs/security.md)."
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _writes_search_parameters(request: FhirRequest) -> bool:
    if request.method in READ_METHODS:
        return False
    if request.path[:1] == ("SearchParameter",):
        return True
    body = request.body
    if not request.path and isinstance(body, dict):
        entries = body.get("entry")
        return isinstance(entries, list) and any(
            isinstance(e, dict)
            and (
                (
                    isinstance(e.get("resource"), dict)
                    and e["resource"].get("resourceType") == "SearchParameter"
                )
                or str((e.get("request") or {}).get("url", "")).startswith("SearchParameter")
            )
            for e in entries
        )
    return False


def _stored_read(path: tuple[str, ...], raw: str) -> bool:
    """Whether a GET without parameters is a plain read or vread, served by ``read_stored``.

    Paths with an operation (``$``) or a NUL go the general way, which has their errors.
    """
    if "$" in raw or "\x00" in raw:
        return False
    if len(path) == 2:
        return path[1][:1] != "_"
    return len(path) == 4 and path[2] == "_history"


def tune_garbage_collector() -> None:
    """Keep full collections off the request path.

    Everything loaded at start-up (definitions, compiled FHIRPath, the registry) is long-lived:
    freezing it takes it out of every later collection, and a higher first threshold makes
    young collections rarer. Measured (docs/PERFORMANCE.md): read p99 from ~30 ms to ~8 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


_CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "If-Match",
    "If-None-Exist",
    "If-None-Match",
    "Prefer",
]
_PUBLIC_PATHS = frozenset({("metadata",)})  # the CapabilityStatement needs no token (SMART 2.2)


class _ApiCors:
    """CORS for the FHIR API (browser apps such as SMART client-js): credentials are bearer
    tokens in a header, never cookies, so any origin may call, and preflights are answered.
    Pages a person uses (authorize, login, consent, the test IdP) keep the browser's
    same-origin default; the token endpoints send their own CORS headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"],
            allow_headers=_CORS_HEADERS,
            expose_headers=[
                "ETag",
                "Location",
                "Last-Modified",
                "Content-Location",
                *("X-Progress", "Retry-After", "Expires"),  # bulk export status (docs/export.md)
            ],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only cross-origin requests carry Origin: the rest (servers, scripts) go straight on.
        if scope["type"] == "http" and any(name == b"origin" for name, _ in scope["headers"]):
            path = scope.get("path", "")
            if path.startswith("/fhir") and not path.startswith(
                ("/fhir/auth/", "/fhir/.well-known/")
            ):
                await self.cors(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cors() -> Middleware:
    return Middleware(_ApiCors)


def _under_a_type(path: str) -> bool:
    """``/fhir/Patient…`` without an operation: a path that no route ahead of the general FHIR
    route takes (those are ``/fhir/auth/…``, ``/fhir/.well-known/…`` and ``$`` operations)."""
    head = path[6:7]
    return path.startswith("/fhir/") and head.isascii() and head.isupper() and "$" not in path


class _TypeRoute(Route):
    """The general FHIR route, tried first for paths under a resource type (``_under_a_type``),
    where Starlette would try the ~20 routes ahead of it in turn (a regular expression each,
    a few percent of a small search's Python). Every other path goes the usual way, and so
    does any request this route would not take in full (a method it does not allow: 405)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not scope.get("root_path") and _under_a_type(scope["path"]):
            match, child = super().matches(scope)
            if match is Match.FULL:
                return match, child
        return Match.NONE, {}


def _type_route_first(routes: list[BaseRoute], fhir_route: Route) -> None:
    """Put a ``_TypeRoute`` for ``fhir_route`` first, unless a route ahead of it could take
    one of its paths (then taking them first would change which route answers)."""
    ahead = routes[: routes.index(fhir_route)]
    for route in ahead:
        path = getattr(route, "path", None)
        if not isinstance(route, Route) or path is None:
            return
        if path.startswith("/fhir/{") or _under_a_type(path):
            return
    routes.insert(0, _TypeRoute(fhir_route.path, fhir_route.endpoint, methods=fhir_route.methods))


def bearer_token(request: Request) -> str:
    """The RFC 6750 §2.1 bearer credential of ``Authorization``; Unauthorized if absent."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if not header:
        raise Unauthorized("This server needs an access token (Authorization: Bearer …)", error="")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <access token>'")
    return credential.strip()


def create_app(settings: Settings, *, verifier: TokenVerifier | None = None) -> Starlette:
    """The node's ASGI app. Unless ``settings.open``, every FHIR request but ``metadata``
    needs a bearer token that ``verifier`` (default: this node's own authorization server)
    accepts; its grant becomes the request's Visibility, compiled into every query
    (store/access.py)."""
    repository = Repository(settings.database_url, max_size=settings.pool_size)
    # One appender per process: reads' events committed durably and chained, batch by batch.
    appender = AuditAppender(repository.pool.connection) if settings.audit else None
    auditor = Auditor(settings.base_url or "healthmesh", appender)

    parameters = SearchParameterWatch(repository)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        migrate(settings.database_url)
        if not settings.audit:
            log.warning(AUDIT_OFF_WARNING)
        await repository.open()
        await _seal_keys(repository)
        await parameters.refresh(force=True)
        watcher = asyncio.create_task(parameters.watch())
        # A changed security-label rule table: label what was stored before (in the background).
        labelling = (
            asyncio.create_task(relabel(repository)) if await needs_relabel(repository) else None
        )
        tune_garbage_collector()
        try:
            yield
        finally:
            watcher.cancel()
            if labelling is not None:
                labelling.cancel()
            await parameters.close()
            if appender is not None:
                await appender.close()
            await repository.close()

    def base_url(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return request_base(request)

    async def access(
        request: Request, path: tuple[str, ...]
    ) -> tuple[AccessGrant | None, Visibility | None]:
        """The caller's verified grant and what it may see; None (everything, nobody) with
        --open or public paths. Whether any Consent rule applies to the access is asked in
        the token check's own statement (store/consent_sql.py ``settle``): one round trip.
        Only for reads: a write (a transaction Bundle) could write a Consent, then read."""
        if settings.open or path in _PUBLIC_PATHS:
            return None, None
        token = bearer_token(request)
        reading = request.method in READ_METHODS
        try:
            grant, rule_may_apply = await token_verifier.verify_and_ask(
                token,
                audience=base_url(request),
                ask=lambda grant: consent_sql.probe(visibility_of(grant)) if reading else None,
            )
        except InvalidToken as refused:
            # The reason is for the client; the token itself is never echoed or logged.
            raise Unauthorized(f"The access token was refused: {refused.reason}") from None
        visibility = visibility_of(grant)
        if rule_may_apply is not None and visibility is not None:
            visibility = consent_sql.settled(visibility, bool(rule_may_apply))
        return grant, visibility

    def visibility_of(grant: AccessGrant | None) -> Visibility | None:
        if grant is None:
            return None
        return visibility_for(grant, consent_default_permit=settings.consent_default == "opt-out")

    def client_address(request: Request) -> str | None:
        return request.client.host if request.client else None

    async def audit_read(
        request: Request,
        fhir_request: FhirRequest,
        grant: AccessGrant,
        *,
        result: FhirResult | None,
        status: int,
        description: str | None = None,
    ) -> None:
        """A read's or a refusal's AuditEvents, committed before the answer is sent."""
        prepared = auditor.prepared(
            fhir_request,
            grant,
            result=result,
            status=status,
            address=client_address(request),
            description=description,
        )
        await auditor.record_prepared(prepared)

    async def read_stored(path: tuple[str, ...], media: str) -> Response:
        """GET [type]/[id] and [type]/[id]/_history/[vid] without parameters: the hot path.

        One primary-key lookup of only what the response needs, and the stored bytes sent as
        they are. The same answers as the read and vread interactions (their checks in the
        same order, 404, 410, ETag, Last-Modified), without the general request machinery.
        """
        res_type, id = check_type(path[0]), check_id(path[1])
        if len(path) == 2:
            found = await repository.read_current(res_type, id)
        else:
            found = await repository.read_version(res_type, id, check_version(path[3]))
        if found is not None and not found.deleted and found.content is not None:
            return StoredResponse(found.content, found.version_id, found.last_modified, media)
        what = "/".join(path)
        if found is None:
            raise NotFound(f"{what} is not known")
        raise Gone(f"{what} was deleted (version {found.version_id})")

    async def run(
        fhir_request: FhirRequest,
        grant: AccessGrant | None,
        visibility: Visibility | None,
        request: Request,
    ) -> FhirResult:
        """Run the interaction; with a grant, audit it (writes in their own transaction)."""
        if not fhir_request.path and fhir_request.method == "POST":
            return await transaction.process(repository, fhir_request)
        write = fhir_request.method not in READ_METHODS
        async with repository.session(write=write, visibility=visibility) as session:
            result = await dispatch(session, fhir_request)
            if write and grant is not None:
                events = auditor.events(
                    fhir_request,
                    grant,
                    result=result,
                    status=result.status,
                    address=client_address(request),
                )
                await auditor.in_transaction(session, events)
        if not write and grant is not None:
            await audit_read(request, fhir_request, grant, result=result, status=result.status)
        return result

    async def fhir(request: Request) -> Response:
        media = "application/fhir+json"
        try:
            media = response_type(request)
            raw_path: str = request.path_params.get("path", "")
            path = path_segments(raw_path)
            grant, visibility = await access(request, path)
            if (
                grant is None
                and request.method == "GET"
                and not request.scope.get("query_string")
                and _stored_read(path, raw_path)
            ):
                return await read_stored(path, media)
            base = base_url(request)  # after the direct read, which does not need it
            body: object = None
            extra: list[tuple[str, str]] = []
            if request.method in _BODY_METHODS:
                raw = await read_body(request, settings.max_body_bytes)
                body, extra = parse_body(request, raw, is_search=path[-1:] == ("_search",))
            fhir_request = to_fhir_request(
                request, path, body, extra, base, visibility, secured=not settings.open
            )
            if grant is not None and auditor.enabled and fhir_request.method not in READ_METHODS:
                fhir_request = replace(
                    fhir_request,
                    audit_hook=auditor.transaction_hook(grant, client_address(request)),
                )
            try:
                result = await run(fhir_request, grant, visibility, request)
            except FhirError as error:
                # The refusal is an access attempt too (unless the audit itself failed).
                if grant is not None and not isinstance(error, AuditFailed):
                    await audit_read(
                        request,
                        fhir_request,
                        grant,
                        result=None,
                        status=error.status,
                        description=str(error)[:200],
                    )
                raise
            if _writes_search_parameters(fhir_request):
                await parameters.refresh(force=True)  # searchable from the very next request
            return render(fhir_request, result, media)
        except FhirError as error:
            return error_response(error, media)
        except psycopg.errors.DataError as exc:
            # A value PostgreSQL cannot take (out of range, malformed) that validation let by:
            # the client's input, so a 400 — logged, since validation should have caught it.
            log.warning(
                "database refused a value on %s %s: %s",
                request.method,
                request.url.path,
                exc.sqlstate,
            )
            outcome = operation_outcome(
                [
                    Issue(
                        code="value",
                        diagnostics="A value in the request is out of range or malformed",
                    )
                ]
            )
            return JSONResponse(outcome, status_code=400, media_type=media)
        except Exception:
            # A bug, not the client's fault: log it (no request data, which may hold PHI) and
            # answer with an OperationOutcome rather than a bare 500 page.
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            outcome = operation_outcome(
                [
                    Issue(
                        severity="fatal",
                        code="exception",
                        diagnostics="Internal server error; it has been logged",
                    )
                ]
            )
            return JSONResponse(outcome, status_code=500, media_type=media)

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    fhir_route = Route("/fhir/{path:path}", fhir, methods=methods)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/fhir", fhir, methods=methods),
        fhir_route,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[_cors()])
    app.state.auditor = auditor  # the auth, authorize and share routes record through it
    # SMART authorization server: /fhir/auth, .well-known
    auth = mount_auth(app, settings, repository)
    token_verifier: TokenVerifier = verifier if verifier is not None else auth.verifier
    # cms_smart: IAL2 id_tokens of the allow-listed providers (and of the test IdP if served).
    identifier = NodeIdentifier(repository, auth.replay, test_idp=settings.test_identity_provider)
    auth.patient_identifier = identifier
    flow = mount_authorize(app, settings, repository, auth)  # authorize, login, consent, register
    if auditor.enabled:  # every identity-match decision, cms_smart's and the login's
        identifier.identifier.on_decision = auditor.match_decision
        flow.identities.identifier.on_decision = auditor.match_decision
    if settings.test_identity_provider:  # synthetic people only; refuses in production
        from healthmesh.auth.identity.test_idp import mount_test_idp

        mount_test_idp(app, repository.pool, base_url=settings.base_url)
    mount_share(app, settings, repository, token_verifier)  # SMART Health Links and Cards
    # Bulk Data $export: kick-off, status and file routes ahead of /fhir/{path}; its worker.
    app.state.export = mount_export(app, settings, repository, token_verifier, auditor)
    # A share created without a Bundle carries the patient's own Kill the Clipboard bundle.
    app.state.share.summaries = OwnRecordBundles(
        repository,
        settings.base_url or "http://localhost/fhir",
        consent_default_permit=settings.consent_default == "opt-out",
    )
    # the clinic check-in page and API
    mount_checkin(app, settings, repository, token_verifier, auditor)
    _type_route_first(app.router.routes, fhir_route)
    app.state.repository = repository
    app.state.settings = settings
    return app
