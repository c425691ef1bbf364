"""HTTP for the clinic check-in: the page at ``/checkin`` and its API (docs/sharing.md,
"For the clinic").

- ``GET /checkin`` — the front-desk page (static HTML + vanilla JS; it holds no data).
- ``POST /checkin/api/scan`` — ``{text | image, passcode?}`` → the received share's one-screen
  summary, the clinic's candidate Patients and the link text to import with.
- ``POST /checkin/api/import`` — ``{text, passcode?, patient: id | "new", reviewed}`` → what
  was imported (one transaction).

The API is for front-desk staff: every call needs a bearer token of this node's authorization
server (or the configured verifier) **without** a patient in context (a user/ or system/
token), whose scopes let it search Patients and, to import, create the imported types and
Provenance; the token becomes the Visibility compiled into every query and write, exactly as
on /fhir. Every error is a 4xx OperationOutcome; nothing of a link, key or passcode is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from healthmesh.api.auditing import Auditor
from healthmesh.api.checkin_page import PAGE
from healthmesh.auth.grant import AccessGrant, InvalidToken, TokenVerifier
from healthmesh.auth.policy import visibility_for
from healthmesh.checkin import errors
from healthmesh.checkin.candidates import ReadHook
from healthmesh.checkin.importer import IMPORTED, Importer
from healthmesh.checkin.service import Caller, CheckinService
from healthmesh.config import Settings
from healthmesh.fhir.errors import FhirError, Forbidden, Issue, Unauthorized, operation_outcome
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"
NO_STORE = {"Cache-Control": "no-store"}
Endpoint = Callable[[Request], Awaitable[Response]]
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status, {**NO_STORE, **(headers or {})}, media_type=FHIR_JSON
    )


async def _body(request: Request, limit: int) -> dict[str, Any]:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.invalid_input(f"The request is larger than {limit} bytes.")
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks) or b"{}")
    except orjson.JSONDecodeError:
        raise errors.invalid_input("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise errors.invalid_input("The request body is a JSON object.")
    return body


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise errors.invalid_input(f"'{name}' must be a string.")
    return value or None


def _photo(value: str) -> bytes:
    """A photo as base64, or as a data: URL (what a canvas gives)."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.unreadable_photo("The photo is not valid base64.") from None


def _check_scopes(grant: AccessGrant, *, importing: bool, settings: Settings) -> Any:
    """The staff's Visibility; 403 for patient tokens and for scopes that cannot do the job."""
    if grant.patient is not None or (grant.fhir_user or "").startswith("Patient/"):
        raise Forbidden("Check-in is for front-desk staff: a patient's token cannot use it")
    visibility = visibility_for(grant, consent_default_permit=settings.consent_default == "opt-out")
    needed = [("Patient", "r"), ("Patient", "s")]
    if importing:
        needed += [(t, p) for t in (*IMPORTED, "Patient", "Provenance") for p in ("c", "s")]
    for res_type, permission in needed:
        if not visibility.covers(res_type, permission):
            verb = {"c": "create", "r": "read", "s": "search"}[permission]
            raise Forbidden(
                f"This token's scopes do not permit {verb} on {res_type}, which check-in needs"
                " (e.g. user/*.crs or system/*.crs)"
            )
    return visibility


def mount_checkin(
    app: Starlette,
    settings: Settings,
    repository: Repository,
    verifier: TokenVerifier,
    auditor: Auditor,
) -> CheckinService:
    from healthmesh.api.app import bearer_token

    service = CheckinService(repository, settings.checkin)
    app.state.checkin = service

    def fhir_base(request: Request) -> str:
        return settings.base_url or f"{request.url.scheme}://{request.url.netloc}/fhir"

    def own_issuer(request: Request) -> str:
        share = settings.share
        origin = (share.public_base or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")
        return share.issuer or f"{origin}/shc"

    def audit_read(request: Request, grant: AccessGrant) -> ReadHook:
        address = request.client.host if request.client else None

        async def hook(fhir_request: FhirRequest, result: FhirResult) -> None:
            events = auditor.events(
                fhir_request, grant, result=result, status=result.status, address=address
            )
            await auditor.record(events)  # committed before the answer leaves (503 if not)

        return hook

    async def caller(request: Request, *, importing: bool) -> Caller:
        try:
            grant = await verifier.verify(bearer_token(request), audience=fhir_base(request))
        except InvalidToken as refused:
            raise Unauthorized(f"The access token was refused: {refused.reason}") from None
        visibility = _check_scopes(grant, importing=importing, settings=settings)
        return Caller(
            visibility=visibility,
            importer=Importer(fhir_user=grant.fhir_user, client_id=grant.client_id),
            base=fhir_base(request),
            own_issuer=own_issuer(request),
            audit_hook=auditor.transaction_hook(
                grant,
                request.client.host if request.client else None,
                description="clinic check-in import",
            ),
            audit_read=audit_read(request, grant),
        )

    def guarded(endpoint: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                if request.method != "POST":  # an OperationOutcome, not Starlette's text 405
                    raise errors.CheckinProblem(
                        "method", "Use POST.", status=405, code="not-supported"
                    )
                return await endpoint(request)
            except errors.CheckinProblem as problem:
                return _json(problem.outcome(), problem.status, problem.headers())
            except FhirError as error:
                return _json(error.outcome(), error.status, error.headers)
            except Exception:
                # No request data in the log: it holds links, passcodes and PHI.
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                outcome = operation_outcome(
                    [
                        Issue(
                            severity="fatal", code="exception", diagnostics="Internal error; logged"
                        )
                    ]
                )
                return _json(outcome, 500)

        return run

    limit = settings.checkin.max_image_bytes * 4 // 3 + 64 * 1024

    async def scan(request: Request) -> Response:
        who = await caller(request, importing=False)
        body = await _body(request, limit)
        text, image = _string(body, "text"), _string(body, "image")
        if image is not None:
            # OpenCV takes 0.1-0.5 s on a camera frame: off the event loop.
            text, scanned = await asyncio.to_thread(service.scan_photo, _photo(image))
        elif text is not None:
            scanned = service.scan_text(text)
        else:
            raise errors.invalid_input("Send 'text' (a pasted link) or 'image' (a photo).")
        received = await service.receive(scanned, _string(body, "passcode"), who)
        preview = await service.preview(received, who)
        return _json({"text": text, **preview})

    async def import_share(request: Request) -> Response:
        who = await caller(request, importing=True)
        body = await _body(request, 256 * 1024)
        text, patient = _string(body, "text"), _string(body, "patient")
        if text is None:
            raise errors.invalid_input("Send 'text': the link (or card) shown in the summary.")
        if patient is None:
            raise errors.CheckinProblem(
                "choose-patient",
                "Choose the patient to import for, or 'new patient'.",
                status=400,
                code="required",
                expression="patient",
            )
        received = await service.receive(service.scan_text(text), _string(body, "passcode"), who)
        result = await service.import_share(
            received, patient=patient, reviewed=_string(body, "reviewed"), caller=who
        )
        return _json(result)

    async def page(request: Request) -> Response:
        return HTMLResponse(
            PAGE,
            headers={
                **NO_STORE,
                # The page's own script and styles only; no framing (clickjacking).
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline';"
                " style-src 'unsafe-inline'; img-src 'self' data: blob:; frame-src blob:;"
                " object-src blob:; frame-ancestors 'none'",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
            },
        )

    app.router.routes.extend(
        [
            Route("/checkin", page, methods=["GET"]),
            Route("/checkin/api/scan", guarded(scan), methods=ANY_METHOD),
            Route("/checkin/api/import", guarded(import_share), methods=ANY_METHOD),
        ]
    )
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):
            try:
                yield
            finally:
                await service.close()

    app.router.lifespan_context = lifespan
    return service
