"""HTTP for FHIR Bulk Data export (Bulk Data Access IG v2.0.0, export.html; docs/export.md).

- Kick-off: ``GET|POST [base]/$export``, ``[base]/Patient/$export``,
  ``[base]/Group/[id]/$export`` with ``Prefer: respond-async`` → 202 and ``Content-Location``.
- Status: ``GET [base]/$export-status/[job]`` → 202 (``X-Progress``, ``Retry-After``) while
  running, 200 and the manifest when done, the job's OperationOutcome when it failed;
  ``DELETE`` cancels (202) and removes its files.
- Files: ``GET [base]/$export-file/[job]/[n]`` → ``application/fhir+ndjson``.

Status and files need a token of the same client and user as the kick-off
(``requiresAccessToken``); anyone else's job is 404, exactly as one that does not exist.
Every error is an OperationOutcome.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from healthmesh.api.auditing import Auditor
from healthmesh.api.parsing import read_body, response_type
from healthmesh.api.render import error_response
from healthmesh.auth.grant import AccessGrant, InvalidToken, TokenVerifier
from healthmesh.config import Settings
from healthmesh.export import jobs
from healthmesh.export.audit_events import download_events, kickoff_event
from healthmesh.export.params import ExportRequest, pairs_of_parameters, parse_export
from healthmesh.export.query import filter_clauses
from healthmesh.export.runner import ExportRunner
from healthmesh.export.worker import ExportWorker
from healthmesh.fhir.errors import (
    FhirError,
    Forbidden,
    Gone,
    InvalidRequest,
    Issue,
    NotFound,
    Severity,
    Unauthorized,
    operation_outcome,
)
from healthmesh.fhir.ids import is_valid_id
from healthmesh.fhir.jsonio import loads_resource
from healthmesh.interactions.valuesets import expand_value_sets
from healthmesh.privacy import chain
from healthmesh.store.access import Visibility
from healthmesh.store.repository import Repository, Session

log = logging.getLogger(__name__)
NDJSON = "application/fhir+ndjson"
Endpoint = Callable[[Request], Awaitable[Response]]


def outcome_response(
    status: int,
    text: str,
    *,
    severity: Severity = "information",
    headers: dict[str, str] | None = None,
) -> Response:
    """A one-issue OperationOutcome answer (informational unless said otherwise)."""
    code = "exception" if severity == "fatal" else "informational"
    outcome = operation_outcome([Issue(severity=severity, code=code, diagnostics=text)])
    return JSONResponse(outcome, status, headers=headers, media_type="application/fhir+json")


class TooMany(FhirError):
    def __init__(self, diagnostics: str, retry_after: int) -> None:
        super().__init__(
            [Issue(code="throttled", diagnostics=diagnostics)],
            status=429,
            headers={"Retry-After": str(retry_after)},
        )


def mount_export(
    app: Starlette,
    settings: Settings,
    repository: Repository,
    verifier: TokenVerifier,
    auditor: Auditor,
) -> ExportWorker:
    """Add export's routes (ahead of the generic FHIR route) and its worker to ``app``."""
    from healthmesh.api.app import bearer_token  # app.py imports this module first

    export = settings.export
    runner = ExportRunner(
        repository.pool, export, consent_default_permit=settings.consent_default == "opt-out"
    )
    worker = ExportWorker(repository.pool, export, runner)

    def base_url(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    async def access(request: Request) -> AccessGrant | None:
        if settings.open:
            return None
        token = bearer_token(request)
        try:
            return await verifier.verify(token, audience=base_url(request))
        except InvalidToken as refused:
            raise Unauthorized(f"The access token was refused: {refused.reason}") from None

    def address(request: Request) -> str | None:
        return request.client.host if request.client else None

    async def record(events: list[dict[str, Any]]) -> None:
        async with repository.pool.connection() as conn:
            await chain.record(conn, events)

    def guarded(endpoint: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            try:
                return await endpoint(request)
            except FhirError as error:
                return error_response(error)
            except Exception:
                route = getattr(request.scope.get("route"), "path", "?")
                log.exception("unexpected error on %s %s", request.method, route)
                return outcome_response(
                    500, "Internal server error; it has been logged", severity="fatal"
                )

        return run

    def visibility_of(grant: AccessGrant | None) -> Visibility | None:
        return runner.visibility(grant)

    async def parse(request: Request, level: str, group: str | None) -> ExportRequest:
        prefer = request.headers.get("prefer", "").replace(" ", "").lower()
        if "respond-async" not in prefer.split(","):
            raise InvalidRequest(
                "$export runs asynchronously: send Prefer: respond-async"
                " (FHIR Asynchronous Request Pattern)",
                expression="Prefer",
            )
        pairs = list(request.query_params.multi_items())
        if request.method == "POST":
            raw = await read_body(request, settings.max_body_bytes)
            if raw:
                pairs += pairs_of_parameters(loads_resource(raw))
        for name, value in pairs:
            if "\x00" in name or "\x00" in value:
                raise InvalidRequest(f"The parameter {name!r} contains a NUL character")
        return parse_export(level, pairs, group=group, lenient="handling=lenient" in prefer)

    async def authorize(
        grant: AccessGrant | None, export: ExportRequest, lenient: bool
    ) -> ExportRequest:
        """Refuse what the token can never read; the rows are the query's business."""
        visibility = visibility_of(grant)
        if visibility is not None:
            if visibility.types_covered("r") == frozenset():
                raise Forbidden("This token's scopes permit reading no resources")
            refused = [t for t in export.types if not visibility.covers(t, "r")]
            if refused and not lenient:
                raise Forbidden(
                    f"This token's scopes do not permit reading {refused[0]}", expression="_type"
                )
            if refused:
                export = replace(
                    export,
                    types=tuple(t for t in export.types if t not in refused),
                    warnings=(
                        *export.warnings,
                        *(f"_type: this token may not read {t}; left out" for t in refused),
                    ),
                )
        async with repository.session(write=False, visibility=visibility) as session:
            # A _typeFilter's value sets (:in, :not-in) must expand here, or say why now.
            for res_type in export.filters:
                for clauses in filter_clauses(export, res_type):
                    await expand_value_sets(session, clauses)
            group = export.group if export.level == "group" else None
            if group is not None and not await _group(session, group):
                raise NotFound(f"Group/{group} is not known")
        return export

    def kickoff(level: str) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            response_type(request)  # XML-only clients: 406
            grant = await access(request)
            group = request.path_params.get("group")
            return await start(request, grant, level, group)

        return endpoint

    async def start(
        request: Request, grant: AccessGrant | None, level: str, group: str | None
    ) -> Response:
        url = str(request.url)
        try:
            export_request = await parse(request, level, group)
            lenient = "handling=lenient" in request.headers.get("prefer", "").replace(" ", "")
            export_request = await authorize(grant, export_request, lenient)
            async with repository.pool.connection() as conn:
                try:
                    job_id = await jobs.create(
                        conn,
                        owner=jobs.owner_of(grant),
                        grant=jobs.grant_facts(grant),
                        request=url,
                        params=export_request.to_json(),
                        max_active=export.max_active_jobs,
                    )
                except jobs.TooManyJobs:
                    raise TooMany(
                        f"At most {export.max_active_jobs} exports may run at once for one"
                        " client; wait for one to finish or cancel one",
                        retry_after=export.retry_after * 5,
                    ) from None
        except FhirError as error:
            if grant is not None:  # a refused kick-off is an access attempt too
                await record(
                    [
                        kickoff_event(
                            grant,
                            request=url,
                            status=error.status,
                            address=address(request),
                            node=auditor.node,
                            description=str(error)[:200],
                        )
                    ]
                )
            raise
        if grant is not None:
            await record(
                [
                    kickoff_event(
                        grant, request=url, status=202, address=address(request), node=auditor.node
                    )
                ]
            )
        worker.wake()
        status_url = f"{base_url(request)}/$export-status/{job_id}"
        return outcome_response(
            202, f"Export accepted; poll {status_url}", headers={"Content-Location": status_url}
        )

    async def owned_job(request: Request) -> tuple[AccessGrant | None, jobs.Job]:
        grant = await access(request)
        job_id = request.path_params["job"]
        job = None
        if len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id):
            async with repository.pool.connection() as conn:
                job = await jobs.get(conn, job_id, jobs.owner_of(grant))
        if job is None:
            raise NotFound(f"No export job {job_id[:64]} is known to this client")
        return grant, job

    async def status(request: Request) -> Response:
        _, job = await owned_job(request)
        if request.method == "DELETE":
            async with repository.pool.connection() as conn:
                if not await jobs.delete(conn, job.id, job.owner):
                    raise NotFound(f"No export job {job.id} is known to this client")
            return outcome_response(202, "Export cancelled; its files are deleted")
        if job.status in jobs.ACTIVE:
            return Response(
                status_code=202,
                headers={
                    "X-Progress": (job.progress or job.status)[:100],
                    "Retry-After": str(export.retry_after),
                },
            )
        if job.status == "failed":
            return Response(
                job.error or "{}",
                status_code=job.error_status or 500,
                media_type="application/fhir+json",
            )
        async with repository.pool.connection() as conn:
            files = await jobs.files(conn, job.id)
        base = base_url(request)

        def entry(f: jobs.ExportFile) -> dict[str, Any]:
            return {
                "type": f.res_type,
                "url": f"{base}/$export-file/{job.id}/{f.n}",
                "count": f.count,
            }

        assert job.transaction_time is not None
        manifest = {
            "transactionTime": job.transaction_time.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "request": job.request,
            "requiresAccessToken": not settings.open,
            "output": [entry(f) for f in files if f.kind == "output"],
            "error": [entry(f) for f in files if f.kind == "error"],
        }
        headers = {}
        if job.expires_at is not None:
            headers["Expires"] = format_datetime(job.expires_at.astimezone(UTC), usegmt=True)
        return Response(orjson.dumps(manifest), 200, headers=headers, media_type="application/json")

    async def download(request: Request) -> Response:
        grant, job = await owned_job(request)
        raw_n = request.path_params["n"]
        if job.status != "completed" or not raw_n.isdigit() or len(raw_n) > 9:
            raise NotFound(f"No file {raw_n[:16]} in export job {job.id}")
        n = int(raw_n)
        async with repository.pool.connection() as conn:
            f = await jobs.file(conn, job.id, n)
            if f is None:
                raise NotFound(f"No file {n} in export job {job.id}")
            visibility = visibility_of(grant)
            if (
                f.kind == "output"
                and visibility is not None
                and not visibility.covers(f.res_type, "r")
            ):
                # The token was narrowed (refresh with fewer scopes) since the kick-off.
                raise Forbidden(f"This token's scopes do not permit reading {f.res_type}")
            assert job.transaction_time is not None
            if await jobs.decisions_changed(conn, f, job.transaction_time):
                raise Gone(
                    f"File {n} of export job {job.id} was produced before a patient whose data"
                    " it holds changed their Consent (or the sensitive-data rules changed);"
                    " it is no longer served: start a new export"
                )
            if grant is not None and f.kind == "output":
                # Audited before the first byte leaves; if it cannot be written, nothing is.
                await chain.record(
                    conn,
                    download_events(grant, job.id, f, address=address(request), node=auditor.node),
                )

        async def body() -> AsyncIterator[bytes]:
            async with repository.pool.connection() as conn:
                async for chunk in jobs.chunks(conn, job.id, n):
                    yield chunk

        return StreamingResponse(body(), media_type=NDJSON)

    methods = ["GET", "POST"]
    app.router.routes[0:0] = [
        Route("/fhir/$export", guarded(kickoff("system")), methods=methods),
        Route("/fhir/Patient/$export", guarded(kickoff("patient")), methods=methods),
        Route("/fhir/Group/{group}/$export", guarded(kickoff("group")), methods=methods),
        Route("/fhir/$export-status/{job}", guarded(status), methods=["GET", "DELETE"]),
        Route("/fhir/$export-file/{job}/{n}", guarded(download), methods=["GET"]),
    ]

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):  # opens the repository's pool
            worker.start()
            try:
                yield
            finally:
                await worker.close()

    app.router.lifespan_context = lifespan
    return worker


async def _group(session: Session, group_id: str) -> bool:
    if not is_valid_id(group_id):
        raise InvalidRequest(f"'{group_id}' is not a valid Group id", expression="Group")
    found = await session.readable("Group", group_id)
    return found is not None and not found.deleted
