"""From an HTTP request to a FhirRequest: format negotiation, body limits, content types."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request

from healthmesh.fhir.errors import (
    InvalidRequest,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from healthmesh.fhir.jsonio import loads_resource
from healthmesh.interactions.context import FhirRequest
from healthmesh.store.access import Visibility

JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")
XML_TYPES = ("application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir", "xml")
PATCH_TYPE = "application/json-patch+json"
FORM_TYPE = "application/x-www-form-urlencoded"
_PASSED_HEADERS = ("if-match", "if-none-exist", "if-none-match", "if-modified-since", "prefer")
_PASSED_NAMES = frozenset(name.encode() for name in _PASSED_HEADERS)


def header(request: Request, name: bytes) -> str | None:
    """One request header by its lower-case name (ASGI gives names lower-cased).

    Cheaper than ``request.headers.get`` for an absent header, the common case on reads,
    where Starlette raises and catches a KeyError.
    """
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def request_base(request: Request) -> str:
    """``scheme://host/fhir`` as the client addressed us: the same as Starlette's
    ``request.url`` (the Host header, else the server's address without a default port),
    without building and parsing the whole URL on every request (a tenth of a search's
    Python time, py-spy)."""
    scope = request.scope
    scheme = str(scope.get("scheme", "http"))
    host = header(request, b"host")
    if host is None:
        server = scope.get("server")
        if server is None:
            host = "localhost"
        else:
            name, port = server
            host = name if _DEFAULT_PORTS.get(scheme) == port else f"{name}:{port}"
    return f"{scheme}://{host}/fhir"


def response_type(request: Request) -> str:
    """The JSON media type to answer with; XML-only clients get 406 (JSON is all we speak)."""
    # Only a query that may name _format is parsed here (the search parses its own query).
    query = request.scope.get("query_string") or b""
    wanted = request.query_params.get("_format") if b"format" in query else None  # %5Fformat too
    if wanted is not None:
        if wanted in ("json", *JSON_TYPES):
            return "application/json" if wanted == "application/json" else "application/fhir+json"
        raise NotAcceptable(f"_format={wanted} is not supported; this server speaks JSON only")
    accept = header(request, b"accept")
    if not accept:
        return "application/fhir+json"
    offered = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "application/fhir+json" in offered or "*/*" in offered or "application/*" in offered:
        return "application/fhir+json"
    if any(o in JSON_TYPES for o in offered):
        return "application/json"
    if any(o in XML_TYPES for o in offered):
        raise NotAcceptable("XML is not supported; ask for application/fhir+json")
    return "application/fhir+json"


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_body(
    request: Request, raw: bytes, *, is_search: bool
) -> tuple[Any, list[tuple[str, str]]]:
    """(parsed body, extra search parameters from a form-encoded _search body)."""
    media = _media_type(request)
    if is_search:
        if raw and media not in (FORM_TYPE, ""):
            raise UnsupportedMediaType(f"POST _search takes {FORM_TYPE}, not {media}")
        try:
            return None, parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise InvalidRequest("The form body is not UTF-8") from None
    if not raw:
        return None, []
    if request.method == "PATCH":
        if media != PATCH_TYPE:
            raise UnsupportedMediaType(
                f"PATCH takes a JSON Patch ({PATCH_TYPE}); FHIRPath Patch is not supported"
            )
        try:
            return orjson.loads(raw), []
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"The JSON Patch is not valid JSON: {exc}") from None
    if media and media not in JSON_TYPES:
        if media in XML_TYPES:
            raise UnsupportedMediaType("XML bodies are not supported; send application/fhir+json")
        raise UnsupportedMediaType(
            f"Content-Type {media} is not supported; send application/fhir+json"
        )
    return loads_resource(raw), []


def passed_headers(request: Request) -> dict[str, str]:
    """The headers the interactions read (``_PASSED_HEADERS``), in one pass over the raw ASGI
    headers: what ``request.headers[name]`` gives (the first of a repeated header), without
    Starlette's Headers lookups (five scans of the list per request otherwise)."""
    found: dict[str, str] = {}
    for key, value in request.scope["headers"]:
        if key in _PASSED_NAMES:
            found.setdefault(key.decode("latin-1"), value.decode("latin-1"))
    return found


def path_segments(path: str) -> tuple[str, ...]:
    return tuple(s for s in path.split("/") if s)


def to_fhir_request(
    request: Request,
    path: tuple[str, ...],
    body: Any,
    extra: list[tuple[str, str]],
    base: str,
    visibility: Visibility | None = None,
    *,
    secured: bool = False,
) -> FhirRequest:
    # The raw query as sent (what ``request.url.query`` gives, without building the URL).
    query = request.scope.get("query_string", b"").decode("latin-1")
    params = [*parse_qsl(query, keep_blank_values=True), *extra]
    # PostgreSQL text cannot hold U+0000 and no FHIR value needs it: refuse it at the door.
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest(
                f"The parameter {name!r} contains a NUL character", expression=name
            )
    if any("\x00" in segment for segment in path):
        raise InvalidRequest("The URL path contains a NUL character")
    headers = passed_headers(request)
    return FhirRequest(
        method=request.method,
        path=path,
        params=params,
        headers=headers,
        body=body,
        base=base,
        visibility=visibility,
        secured=secured,
    )
