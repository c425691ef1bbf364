"""The ASGI application: the FHIR API at /fhir, a health probe at /health."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthmesh.api.parsing import (
    parse_body,
    path_segments,
    read_body,
    response_type,
    to_fhir_request,
)
from healthmesh.api.render import StoredResponse, error_response, render
from healthmesh.config import Settings
from healthmesh.fhir.errors import FhirError, Gone, Issue, NotFound, operation_outcome
from healthmesh.interactions import transaction
from healthmesh.interactions.context import FhirRequest, check_id, check_type, check_version
from healthmesh.interactions.dispatch import READ_METHODS, dispatch
from healthmesh.interactions.reindex import SearchParameterWatch
from healthmesh.store.migrate import migrate
from healthmesh.store.repository import Repository

log = logging.getLogger(__name__)
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


def create_app(settings: Settings) -> Starlette:
    repository = Repository(settings.database_url, max_size=settings.pool_size)

    parameters = SearchParameterWatch(repository)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        migrate(settings.database_url)
        await repository.open()
        await parameters.refresh(force=True)
        watcher = asyncio.create_task(parameters.watch())
        tune_garbage_collector()
        try:
            yield
        finally:
            watcher.cancel()
            await parameters.close()
            await repository.close()

    def base_url(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

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

    async def fhir(request: Request) -> Response:
        media = "application/fhir+json"
        try:
            media = response_type(request)
            raw_path: str = request.path_params.get("path", "")
            path = path_segments(raw_path)
            if (
                request.method == "GET"
                and not request.scope.get("query_string")
                and _stored_read(path, raw_path)
            ):
                return await read_stored(path, media)
            body: object = None
            extra: list[tuple[str, str]] = []
            if request.method in _BODY_METHODS:
                raw = await read_body(request, settings.max_body_bytes)
                body, extra = parse_body(request, raw, is_search=path[-1:] == ("_search",))
            fhir_request = to_fhir_request(request, path, body, extra, base_url(request))
            if not path and request.method == "POST":
                result = await transaction.process(repository, fhir_request)
            else:
                async with repository.session(write=request.method not in READ_METHODS) as session:
                    result = await dispatch(session, fhir_request)
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
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/fhir", fhir, methods=methods),
        Route("/fhir/{path:path}", fhir, methods=methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.repository = repository
    app.state.settings = settings
    return app
