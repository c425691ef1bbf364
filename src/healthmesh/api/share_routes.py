"""HTTP for sharing: SMART Health Links (receiver endpoints and the patient's management
API) and the SMART Health Card issuer's well-known documents.

- Receiver endpoints — ``POST /shl/{id}`` (manifest), ``GET /shl/{id}?recipient=`` (U flag),
  ``GET /shl/file/{ticket}`` (manifest locations), ``GET /shc/.well-known/jwks.json`` and
  ``/shc/.well-known/crl/{kid}.json`` — need no token (the link is the capability, SHL IG)
  and allow any origin (CORS), since viewers run in browsers.
- The management API under ``/share`` needs a bearer token with a patient in context
  (AccessGrant.patient), verified by the app's verifier; it reaches only that patient's links.
  The patient's page that uses it is api/share_page.py (``GET /share``).

Receiver errors are the IG's answers (404, 401 ``remainingAttempts``, 429) or JSON
``{error, error_description}``; management errors are FHIR OperationOutcomes (what and where).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthmesh.api.share_page import mount_share_page
from healthmesh.auth.grant import AccessGrant, InvalidToken, TokenVerifier
from healthmesh.config import Settings
from healthmesh.fhir.errors import FhirError, Issue, Unauthorized, operation_outcome
from healthmesh.share import qr
from healthmesh.share.content import parse_contents, section_choices
from healthmesh.share.errors import Forbidden, InvalidRequest, LinkNotFound, ShareError
from healthmesh.share.links import NewLink, ShareFile, bundle_file
from healthmesh.share.manifest import check_recipient, parse_manifest_request
from healthmesh.share.service import Sharing
from healthmesh.share.settings import ShareSettings
from healthmesh.share.shl import InvalidLink, decode
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)
JOSE = "application/jose"
MAX_MANIFEST_BODY = 16 * 1024
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}
NO_STORE = {"Cache-Control": "no-store"}
Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


# OperationOutcome issue codes (R4 valueset-issue-type) of the management API's refusals.
_ISSUE_CODES = {401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported"}


def outcome_response(error: ShareError) -> Response:
    """A management refusal as an OperationOutcome, with the IG's headers (Retry-After)."""
    issue = Issue(code=_ISSUE_CODES.get(error.status, "invalid"), diagnostics=error.description)
    return Response(
        orjson.dumps(operation_outcome([issue])),
        error.status,
        {**NO_STORE, **error.headers()},
        media_type="application/fhir+json",
    )


async def read_json(request: Request, limit: int) -> Any:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None


def mount_share(
    app: Starlette, settings: Settings, repository: Repository, verifier: TokenVerifier
) -> Sharing:
    """Add sharing's routes and start-up to ``app``; return the service (app.state.share)."""
    from healthmesh.api.app import bearer_token  # app.py imports this module first

    share_settings: ShareSettings = settings.share
    sharing = Sharing(repository.pool, share_settings)
    app.state.share = sharing

    def origin(request: Request) -> str:
        if share_settings.public_base:
            return share_settings.public_base.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}"

    def fhir_base(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    def issuer(request: Request) -> str:
        return share_settings.issuer or f"{origin(request)}/shc"

    def link_url(request: Request) -> Callable[[str], str]:
        base = origin(request)
        return lambda link_id: f"{base}/shl/{link_id}"

    async def grant_of(request: Request) -> AccessGrant:
        try:
            token = bearer_token(request)
            grant = await verifier.verify(token, audience=fhir_base(request))
        except InvalidToken as refused:
            raise Unauthorized(f"The access token was refused: {refused.reason}") from None
        if grant.patient is None:
            raise Forbidden("sharing needs a token with a patient in context")
        return grant

    async def patient_of(request: Request) -> str:
        patient = (await grant_of(request)).patient
        assert patient is not None
        return patient

    def guarded(endpoint: Endpoint, *, public: bool) -> Endpoint:
        cors = CORS if public else {}

        async def run(request: Request) -> Response:
            if request.method == "OPTIONS" and public:
                return Response(status_code=204, headers=CORS)
            try:
                response = await endpoint(request)
            except ShareError as error:
                if public:
                    response = json_response(error.body(), error.status, error.headers())
                else:
                    response = outcome_response(error)
            except FhirError as error:
                # 401 (no or refused token, with WWW-Authenticate); reading the record: 403
                # for scopes that cannot read it, 422 for a Patient the profile cannot share.
                response = Response(
                    orjson.dumps(error.outcome()),
                    error.status,
                    {**NO_STORE, **error.headers},
                    media_type="application/fhir+json",
                )
            except Exception:
                # The route's template, not the path: link ids and location tickets are
                # capabilities and stay out of logs.
                route = request.scope.get("route")
                where = getattr(route, "path", "?")
                log.exception("unexpected error on %s %s", request.method, where)
                response = json_response(
                    {"error": "server_error", "error_description": "internal error; logged"}, 500
                )
            response.headers.update(cors)
            return response

        return run

    # --- receivers ------------------------------------------------------------------------

    async def manifest(request: Request) -> Response:
        link_id = request.path_params["link"]
        if request.method == "GET":
            recipient = check_recipient(
                request.query_params.get("recipient"), share_settings.max_recipient
            )
            token = await sharing.manifests.direct(link_id, recipient)
            return Response(token, 200, NO_STORE, media_type=JOSE)
        body = await read_json(request, MAX_MANIFEST_BODY)
        parsed = parse_manifest_request(body, max_recipient=share_settings.max_recipient)
        base = origin(request)
        answer = await sharing.manifests.manifest(
            link_id, parsed, lambda ticket: f"{base}/shl/file/{ticket}"
        )
        return json_response(answer, headers=NO_STORE)

    async def location(request: Request) -> Response:
        token = await sharing.manifests.location(request.path_params["ticket"])
        return Response(token, 200, NO_STORE, media_type=JOSE)

    async def jwks(request: Request) -> Response:
        return json_response(
            await sharing.issuer_keys.jwks(), headers={"Cache-Control": "max-age=60"}
        )

    async def crl(request: Request) -> Response:
        name: str = request.path_params["name"]
        found = None
        if name.endswith(".json"):
            found = await sharing.issuer_keys.crl(name.removesuffix(".json"))
        if found is None:
            raise LinkNotFound("no revocation list for this kid")
        return json_response(found, headers={"Cache-Control": "max-age=60"})

    # --- the patient's management API ---------------------------------------------------

    async def create_link(request: Request) -> Response:
        grant = await grant_of(request)
        patient = grant.patient
        assert patient is not None
        body = await read_json(request, settings.max_body_bytes)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body is a JSON object")
        bundle = body.get("bundle")
        single_use = body.get("singleUse", False)
        if not isinstance(single_use, bool):
            raise InvalidRequest("singleUse must be true or false")
        if bundle is not None and body.get("contents") is not None:
            raise InvalidRequest("give either 'bundle' or 'contents', not both")
        if bundle is None:
            contents = parse_contents(body.get("contents"))
            bundle = await sharing.summaries.summary(grant, contents)
            if bundle is None:
                raise InvalidRequest(
                    "your record is not on this node: give the Bundle to share in 'bundle'"
                )
        # R4 validation of a whole record is CPU work: off the event loop.
        files: list[ShareFile] = [await asyncio.to_thread(bundle_file, bundle)]
        new = NewLink(
            flag=_string(body, "flag") or "",
            label=_string(body, "label"),
            exp=_integer(body, "exp"),
            passcode=_string(body, "passcode"),
            single_use=single_use,
        )
        payload, link = await sharing.links.create(patient, new, files, link_url(request))
        answer: dict[str, Any] = {"shlink": payload.encode(), "link": link}
        if share_settings.viewer:
            answer["viewerUrl"] = payload.viewer_url(share_settings.viewer)
        return json_response(answer, 201, NO_STORE)

    async def contents(request: Request) -> Response:
        await patient_of(request)
        return json_response({"sections": section_choices()})

    async def list_links(request: Request) -> Response:
        patient = await patient_of(request)
        return json_response({"links": await sharing.links.owned(patient, link_url(request))})

    async def one_link(request: Request) -> Response:
        patient = await patient_of(request)
        link_id = request.path_params["link"]
        return json_response(await sharing.links.get(patient, link_id, link_url(request)(link_id)))

    async def link_action(request: Request) -> Response:
        patient = await patient_of(request)
        link_id, action = request.path_params["link"], request.path_params["action"]
        status = {"pause": "paused", "resume": "active", "revoke": "revoked"}.get(action)
        if status is None:
            raise LinkNotFound("actions are pause, resume and revoke")
        await sharing.links.set_status(patient, link_id, status)
        return json_response(await sharing.links.get(patient, link_id, link_url(request)(link_id)))

    async def link_accesses(request: Request) -> Response:
        patient = await patient_of(request)
        link_id = request.path_params["link"]
        return json_response({"accesses": await sharing.links.accesses(patient, link_id)})

    async def all_accesses(request: Request) -> Response:
        patient = await patient_of(request)
        return json_response({"accesses": await sharing.links.accesses(patient)})

    async def render_qr(request: Request) -> Response:
        await patient_of(request)
        body = await read_json(request, 64 * 1024)
        if not isinstance(body, dict):
            raise InvalidRequest("the request body is a JSON object")
        fmt = body.get("format", "png")
        if fmt not in qr.MEDIA:
            raise InvalidRequest("format is png or svg")
        if isinstance(body.get("card"), str):
            from healthmesh.share.shc import MAX_SINGLE_QR, MalformedCard, numeric

            card = body["card"]
            if len(card) > MAX_SINGLE_QR:
                raise InvalidRequest(f"a card over {MAX_SINGLE_QR} characters fits no single QR")
            try:
                image = qr.card_qr(numeric(card), fmt)
            except (MalformedCard, ValueError) as error:
                raise InvalidRequest(str(error)) from None
        else:
            shlink = _string(body, "shlink")
            if shlink is None:
                raise InvalidRequest("give 'shlink' (or 'card') to render")
            try:
                payload = decode(shlink)
            except InvalidLink as error:
                raise InvalidRequest(str(error)) from None
            viewer = body.get("viewer", bool(share_settings.viewer))
            if viewer and not share_settings.viewer:
                raise InvalidRequest("this node has no viewer configured")
            text = payload.viewer_url(share_settings.viewer or "") if viewer else payload.encode()
            image = qr.link_qr(text, fmt)
        return Response(image, 200, NO_STORE, media_type=qr.MEDIA[fmt])

    async def issue_card(request: Request) -> Response:
        patient = await patient_of(request)
        body = await read_json(request, 16 * 1024)
        kind = body.get("kind") if isinstance(body, dict) else None
        if not isinstance(kind, str):
            raise InvalidRequest("kind is required: immunization or laboratory")
        card = await sharing.cards.issue(patient, kind, iss=issuer(request))
        return json_response(card, 201, NO_STORE)

    async def list_cards(request: Request) -> Response:
        patient = await patient_of(request)
        return json_response({"cards": await sharing.cards.cards(patient)})

    async def revoke_card(request: Request) -> Response:
        patient = await patient_of(request)
        await sharing.cards.revoke(patient, request.path_params["rid"])
        return json_response({"revoked": request.path_params["rid"]})

    def public(endpoint: Endpoint) -> Endpoint:
        return guarded(endpoint, public=True)

    def private(endpoint: Endpoint) -> Endpoint:
        return guarded(endpoint, public=False)

    mount_share_page(app, settings)  # GET /share: the patient's page over this API
    get, post = ["GET"], ["POST"]
    app.router.routes.extend(
        [
            Route("/shl/file/{ticket}", public(location), methods=["GET", "OPTIONS"]),
            Route("/shl/{link}", public(manifest), methods=["GET", "POST", "OPTIONS"]),
            Route("/shc/.well-known/jwks.json", public(jwks), methods=["GET", "OPTIONS"]),
            Route("/shc/.well-known/crl/{name}", public(crl), methods=["GET", "OPTIONS"]),
            Route("/share/contents", private(contents), methods=get),
            Route("/share/links", private(create_link), methods=post),
            Route("/share/links", private(list_links), methods=get),
            Route("/share/links/{link}", private(one_link), methods=get),
            Route("/share/links/{link}/accesses", private(link_accesses), methods=get),
            Route("/share/links/{link}/{action}", private(link_action), methods=post),
            Route("/share/accesses", private(all_accesses), methods=get),
            Route("/share/qr", private(render_qr), methods=post),
            Route("/share/cards", private(issue_card), methods=post),
            Route("/share/cards", private(list_cards), methods=get),
            Route("/share/cards/{rid}/revoke", private(revoke_card), methods=post),
        ]
    )

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):  # opens the repository's pool
            await sharing.start()
            yield

    app.router.lifespan_context = lifespan
    return sharing


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise InvalidRequest(f"{name} must be an integer (epoch seconds)")
    return value
