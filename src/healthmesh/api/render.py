"""From a FhirResult to an HTTP response: headers (ETag, Last-Modified, Location) and Prefer."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from healthmesh.fhir.errors import FhirError, Issue, operation_outcome
from healthmesh.fhir.summary import check_summary
from healthmesh.interactions.bundles import etag, http_date, resource_view
from healthmesh.interactions.context import FhirRequest, FhirResult

_WRITES = frozenset({"POST", "PUT", "PATCH"})


def json_response(
    body: Any, status: int, media: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media)


class StoredResponse(Response):
    """A version's stored bytes, served as they are (read, vread without parameters).

    The same status and headers as ``render`` gives a read (ETag, Last-Modified, then
    Content-Length and Content-Type, in Starlette's order), built directly as raw header
    pairs: on the hottest path, Starlette's generic header handling is a measurable share.
    """

    def __init__(self, content: str, version_id: int, last_modified: str, media: str) -> None:
        body = content.encode()
        self.status_code = 200
        self.media_type = media
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"etag", b'W/"%d"' % version_id),
            (b"last-modified", last_modified.encode("latin-1")),
            (b"content-length", b"%d" % len(body)),
            (b"content-type", media.encode("latin-1")),
        ]


def error_response(error: FhirError, media: str = "application/fhir+json") -> Response:
    return json_response(error.outcome(), error.status, media, error.headers or None)


def _prefer_return(request: FhirRequest) -> str:
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "return":
            return value.strip('"')
    return "representation"


def render(request: FhirRequest, result: FhirResult, media: str) -> Response:
    headers = dict(result.headers)
    version = result.version
    if version is None:
        body = result.body if result.body is not None else b""
        return (
            json_response(body, result.status, media, headers)
            if body != b""
            else Response(status_code=result.status, headers=headers)
        )
    headers["ETag"] = etag(version)
    headers["Last-Modified"] = http_date(version)
    location = f"{request.base}/{version.res_type}/{version.id}/_history/{version.version_id}"
    if result.status == 201:
        headers["Location"] = location
    elif request.method in _WRITES:
        headers["Content-Location"] = location
    if result.status == 204 or version.content is None:
        return Response(status_code=result.status, headers=headers)
    if request.method in _WRITES:
        mode = _prefer_return(request)
        if mode == "minimal":
            return Response(status_code=result.status, headers=headers)
        if mode == "OperationOutcome":
            outcome = result.outcome or operation_outcome(
                [
                    Issue(
                        severity="information",
                        code="informational",
                        diagnostics=f"{version.res_type}/{version.id} version {version.version_id} stored",
                    )
                ]
            )
            return json_response(outcome, result.status, media, headers)
        return Response(version.content.encode(), result.status, headers, media_type=media)
    summary = check_summary(request.param("_summary"))
    elements = request.param("_elements")
    if summary is None and elements is None:
        return Response(version.content.encode(), result.status, headers, media_type=media)
    view = resource_view(version.content, summary=summary, elements=elements)
    return json_response(view, result.status, media, headers)
