"""Route a FhirRequest to its interaction (R4 http.html#summary: the URL patterns)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from psycopg import sql

from healthmesh.fhir.errors import (
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotSupported,
)
from healthmesh.fhir.structure import is_resource_type
from healthmesh.interactions import create, delete, everything, history, patch, read, search, update
from healthmesh.interactions.capabilities import capability_statement
from healthmesh.interactions.context import FhirRequest, FhirResult, check_id, check_type
from healthmesh.share import bundle, ips
from healthmesh.store.repository import Session
from healthmesh.store.search.compartment import member_condition
from healthmesh.store.search.tables import SYSTEM

READ_METHODS = frozenset({"GET", "HEAD"})
# AuditEvents are written by the audit trail alone (privacy/chain.py), never through REST:
# one written any other way would be outside the hash chain.
READ_ONLY_TYPE = "AuditEvent"


def read_only() -> MethodNotAllowed:
    return MethodNotAllowed(
        "AuditEvent is read-only: the audit trail writes it, no client can create, change or delete it"
    )


def _resource_body(request: FhirRequest) -> dict[str, object]:
    if not isinstance(request.body, dict):
        raise InvalidRequest("This interaction needs a resource in the body")
    return request.body


def _require(session: Session, res_type: str, *permissions: str) -> None:
    """403 unless the token's scopes allow each of ``permissions`` on some ``res_type`` row.

    Whether a particular row is allowed is the query's business (store/access.py); this only
    refuses, plainly, what no row could satisfy.
    """
    visibility = session.visibility
    if visibility is None:
        return
    for permission in permissions:
        if not visibility.covers(res_type, permission):
            verb = _VERBS[permission]
            raise Forbidden(f"This token's scopes do not permit {verb} on {res_type}")


_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def _not_allowed(request: FhirRequest) -> MethodNotAllowed:
    return MethodNotAllowed(f"{request.method} is not allowed on /{'/'.join(request.path)}")


async def dispatch(session: Session, request: FhirRequest) -> FhirResult:
    """Run one non-Bundle request. Batch/transaction Bundles are the caller's business."""
    path, method = request.path, request.method
    if not path:
        if method not in READ_METHODS:
            raise _not_allowed(request)
        return await search.search(session, request, SYSTEM)  # R4 http.html#search: [base]?
    head = path[0]
    if head == "metadata" and len(path) == 1:
        if method not in READ_METHODS:
            raise _not_allowed(request)
        return FhirResult(
            status=200, body=capability_statement(request.base, secured=request.secured)
        )
    if head == "_history" and len(path) == 1:
        if method not in READ_METHODS:
            raise _not_allowed(request)
        return await history.history(session, request)
    if len(path) == 3 and path[2] == "$everything" and head == "Patient":
        if method not in READ_METHODS:
            raise _not_allowed(request)
        return await everything.everything(session, request, path[1])
    if len(path) == 3 and head == "Patient" and path[2] in _SHARE_OPERATIONS:
        return await _share_operation(session, request, path[1], path[2])
    if len(path) == 3 and (is_resource_type(path[2]) or path[2] == "*") and method in READ_METHODS:
        return await _compartment_search(session, request, head, path[1], path[2])
    if head.startswith("$") or any(p.startswith("$") for p in path):
        raise NotFound(
            f"Unknown operation '{next(p for p in path if p.startswith('$'))}'",
            code="not-supported",
        )
    res_type = check_type(head)
    if res_type == READ_ONLY_TYPE and method not in READ_METHODS:
        raise read_only()
    if len(path) == 1:
        match method:
            case "GET" | "HEAD":
                return await search.search(session, request, res_type)
            case "POST":
                _require(session, res_type, "c")
                if request.headers.get("if-none-exist"):
                    _require(session, res_type, "s")
                return await create.create(
                    session,
                    res_type,
                    dict(_resource_body(request)),
                    if_none_exist=request.headers.get("if-none-exist"),
                )
            case "PUT":
                _require(session, res_type, "u", "s")
                return await update.conditional_update(
                    session,
                    res_type,
                    list(request.params),
                    dict(_resource_body(request)),
                    if_match=request.headers.get("if-match"),
                )
            case "DELETE":
                _require(session, res_type, "d", "s")
                return await delete.conditional_delete(session, res_type, list(request.params))
            case "PATCH":
                _require(session, res_type, "u", "s")
                return await patch.conditional_patch(
                    session,
                    res_type,
                    list(request.params),
                    request.body,
                    if_match=request.headers.get("if-match"),
                )
        raise _not_allowed(request)
    second = path[1]
    if len(path) == 2 and second == "_search":
        if method != "POST":
            raise _not_allowed(request)
        return await search.search(session, request, res_type)
    if len(path) == 2 and second == "_history":
        if method not in READ_METHODS:
            raise _not_allowed(request)
        return await history.history(session, request, res_type)
    if len(path) == 2:
        match method:
            case "GET" | "HEAD":
                _require(session, res_type, "r")
                return await read.read(session, res_type, second)
            case "PUT":
                _require(session, res_type, "u")
                return await update.update(
                    session,
                    res_type,
                    second,
                    dict(_resource_body(request)),
                    if_match=request.headers.get("if-match"),
                )
            case "DELETE":
                _require(session, res_type, "d")
                return await delete.delete(session, res_type, second)
            case "PATCH":
                _require(session, res_type, "u")
                return await patch.patch(
                    session,
                    res_type,
                    second,
                    request.body,
                    if_match=request.headers.get("if-match"),
                )
        raise _not_allowed(request)
    if path[2] == "_history" and len(path) in (3, 4):
        if method not in READ_METHODS:
            raise _not_allowed(request)
        if len(path) == 3:
            return await history.history(session, request, res_type, second)
        _require(session, res_type, "r")
        return await read.vread(session, res_type, second, path[3])
    raise NotFound(f"No FHIR interaction at /{'/'.join(path)}", code="not-found")


# Patient-level operations that package the record for sharing (src/healthmesh/share/):
# $summary (IPS IG) and $shared-bundle (CMS Kill the Clipboard). GET, or POST with Parameters.
_SHARE_OPERATIONS = frozenset({"$summary", "$shared-bundle"})


async def _share_operation(
    session: Session, request: FhirRequest, patient_id: str, operation: str
) -> FhirResult:
    if request.method not in (*READ_METHODS, "POST"):
        raise _not_allowed(request)
    if operation == "$summary":
        return await ips.summary_operation(session, request, patient_id)
    return await bundle.shared_bundle_operation(session, request, patient_id)


async def _compartment_search(
    session: Session, request: FhirRequest, compartment: str, owner: str, res_type: str
) -> FhirResult:
    """``Patient/123/Observation?...``: a search restricted to one patient's compartment."""
    check_type(compartment)
    check_id(owner)
    if res_type == "*":
        raise NotSupported("Compartment search across all types (/*) is not supported; name a type")
    r = sql.Identifier("r")
    scope = member_condition(compartment, owner, res_type, r)
    link_path = f"{compartment}/{owner}/{res_type}"
    return await search.search(session, request, res_type, scope=scope, link_path=link_path)


def split_url(url: str) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """A Bundle entry's relative request.url -> (path segments, query parameters)."""
    path, _, query = url.partition("?")
    segments = tuple(s for s in path.strip("/").split("/") if s)
    return segments, parse_qsl(query, keep_blank_values=True)
