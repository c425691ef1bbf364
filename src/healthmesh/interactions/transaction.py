"""batch and transaction (R4 http.html#transaction, #trules).

A transaction runs in one database transaction: every entry succeeds or nothing is stored, and
the first failure is answered with an OperationOutcome naming ``Bundle.entry[n]``. Before any
write, identities are settled — POST entries get their new ids, conditional creates and updates
find their targets — then ``urn:uuid`` and conditional references (``Patient?identifier=s|v``)
in every resource are rewritten to those ids, then entries run in the spec's order: DELETE,
POST, PUT/PATCH, GET/HEAD. Plain creates are written together with COPY.

A batch runs each entry in its own database transaction; one entry's failure is that entry's
response and does not touch the others.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson

from healthmesh.fhir.errors import (
    FhirError,
    InvalidRequest,
    Issue,
    PreconditionFailed,
    operation_outcome,
)
from healthmesh.fhir.ids import new_id, parse_relative
from healthmesh.fhir.references import iter_references, rewrite_references
from healthmesh.interactions import create, write
from healthmesh.interactions.conditional import find_matches
from healthmesh.interactions.context import FhirRequest, FhirResult, check_type
from healthmesh.interactions.dispatch import READ_ONLY_TYPE, dispatch, read_only, split_url
from healthmesh.store.repository import Repository, Session, StoredVersion
from healthmesh.store.rows import PreparedVersion, content_hash, format_instant, now, prepare

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    path: tuple[str, ...]
    params: list[tuple[str, str]]
    full_url: str | None
    resource: Any
    if_none_exist: str | None
    if_match: str | None
    assigned_id: str | None = None  # POST: the id chosen before writing
    existing: str | None = None  # conditional create that matched: nothing to write
    validated: bool = False  # the loader validates lines before building entries


def _at_entry(error: FhirError, index: int) -> FhirError:
    """The same error, its locations moved under ``Bundle.entry[index]``."""
    prefix = f"Bundle.entry[{index}]"

    def move(expression: str | None) -> str:
        if not expression:
            return prefix
        if expression.startswith("Bundle.entry["):
            return expression
        head, dot, rest = expression.partition(".")
        if head[:1].isupper() and head != "If-Match":  # a path inside the entry's resource
            return f"{prefix}.resource" + (f".{rest}" if dot else "")
        return f"{prefix}.{expression}"

    issues = [
        Issue(
            severity=i.severity,
            code=i.code,
            diagnostics=i.diagnostics,
            expression=move(i.expression),
        )
        for i in error.issues
    ]
    return FhirError(issues, error.status, error.headers)


def parse_entries(bundle: Any, base: str) -> list[Entry]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array", expression="Bundle.entry")
    parsed = []
    for i, raw in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(raw, dict):
            raise InvalidRequest("An entry must be an object", expression=where)
        request = raw.get("request")
        if not isinstance(request, dict):
            raise InvalidRequest(
                "A batch or transaction entry needs a request", expression=f"{where}.request"
            )
        method, url = request.get("method"), request.get("url")
        if method not in _ORDER:
            raise InvalidRequest(
                f"Unknown request.method {method!r}", expression=f"{where}.request.method"
            )
        if not isinstance(url, str) or not url:
            raise InvalidRequest("request.url is missing", expression=f"{where}.request.url")
        if url.startswith(base + "/"):
            url = url[len(base) + 1 :]
        path, params = split_url(url)
        resource = raw.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise InvalidRequest(
                f"A {method} entry needs a resource", expression=f"{where}.resource"
            )
        if method == "PATCH":
            resource = _patch_body(resource, where)
        full_url = raw.get("fullUrl")
        parsed.append(
            Entry(
                index=i,
                method=method,
                path=path,
                params=params,
                full_url=full_url if isinstance(full_url, str) else None,
                resource=resource,
                if_none_exist=request.get("ifNoneExist"),
                if_match=request.get("ifMatch"),
            )
        )
    return parsed


def _patch_body(resource: Any, where: str) -> Any:
    """PATCH entries carry the JSON Patch as a Binary resource (R4 http.html#patch)."""
    if (
        isinstance(resource, dict)
        and resource.get("resourceType") == "Binary"
        and "data" in resource
    ):
        try:
            return orjson.loads(base64.b64decode(resource["data"]))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidRequest(
                "The Binary does not hold a JSON Patch", expression=f"{where}.resource.data"
            ) from None
    raise InvalidRequest(
        "A PATCH entry needs its JSON Patch in a Binary resource", expression=f"{where}.resource"
    )


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _response(result: FhirResult, prefer: str, method: str) -> dict[str, Any]:
    """An entry of a batch/transaction-response; reads always carry what they read."""
    response: dict[str, Any] = {"status": _status_line(result.status)}
    entry: dict[str, Any] = {}
    version = result.version
    if version is not None:
        if result.status == 201 or (result.status == 200 and result.body is None):
            response["location"] = f"{version.res_type}/{version.id}/_history/{version.version_id}"
        response["etag"] = f'W/"{version.version_id}"'
        response["lastModified"] = format_instant(version.last_updated)
        wanted = method in ("GET", "HEAD") or "return=representation" in prefer
        if version.content is not None and wanted:
            entry["resource"] = orjson.Fragment(version.content)
    if result.body is not None:
        entry["resource"] = result.body
    if "return=OperationOutcome" in prefer and "resource" not in entry:
        response["outcome"] = operation_outcome(
            [
                Issue(
                    severity="information",
                    code="informational",
                    diagnostics=_status_line(result.status),
                )
            ]
        )
    entry["response"] = response
    return entry


class _Identities:
    """fullUrl -> ``Type/id`` for every entry whose identity is settled before writing."""

    def __init__(self, base: str):
        self.base = base
        self.by_url: dict[str, str] = {}
        self.conditional: dict[str, str] = {}

    def add(self, entry: Entry, res_type: str, id: str) -> None:
        if entry.full_url:
            if entry.full_url in self.by_url:
                # bdl-7: fullUrl is unique within a Bundle
                raise InvalidRequest(
                    f"fullUrl '{entry.full_url}' appears in more than one entry",
                    expression="fullUrl",
                )
            self.by_url[entry.full_url] = f"{res_type}/{id}"

    def rewrite(self, reference: str) -> str | None:
        if reference in self.by_url:
            return self.by_url[reference]
        if reference in self.conditional:
            return self.conditional[reference]
        if reference.startswith(self.base + "/"):
            local = reference[len(self.base) + 1 :]
            return local if parse_relative(local) else None
        return None


async def _settle_identities(session: Session, entries: list[Entry], ids: _Identities) -> None:
    for e in entries:
        try:
            if e.method == "POST":
                if len(e.path) != 1:
                    raise InvalidRequest(
                        "A POST entry's url is a resource type", expression="request.url"
                    )
                res_type = check_type(e.path[0])
                if e.if_none_exist:
                    matches = await find_matches(session, res_type, _criteria(e.if_none_exist))
                    if len(matches) > 1:
                        raise PreconditionFailed(
                            f"ifNoneExist matches several {res_type}", code="multiple-matches"
                        )
                    if matches:
                        e.existing = matches[0]
                e.assigned_id = e.existing or e.assigned_id or new_id()
                ids.add(e, res_type, e.assigned_id)
            elif e.method == "PUT":
                res_type = check_type(e.path[0]) if e.path else ""
                if len(e.path) == 2:
                    ids.add(e, res_type, e.path[1])
                elif len(e.path) == 1 and e.params:
                    matches = await find_matches(session, res_type, e.params)
                    if len(matches) > 1:
                        raise PreconditionFailed(
                            f"The criteria match several {res_type}", code="multiple-matches"
                        )
                    body_id = e.resource.get("id")
                    target = (
                        matches[0] if matches else body_id if isinstance(body_id, str) else new_id()
                    )
                    e.resource["id"] = target
                    e.path, e.params = (res_type, target), []
                    ids.add(e, res_type, target)
                else:
                    raise InvalidRequest(
                        "A PUT entry's url is Type/id or Type?criteria", expression="request.url"
                    )
        except FhirError as error:
            raise _at_entry(error, e.index) from None


def _criteria(query: str) -> list[tuple[str, str]]:
    params = parse_qsl(query.lstrip("?").split("?", 1)[-1], keep_blank_values=True)
    if not params:
        raise InvalidRequest("ifNoneExist has no criteria", expression="request.ifNoneExist")
    return params


async def _resolve_references(session: Session, entries: list[Entry], ids: _Identities) -> None:
    """Rewrite urn:uuid and conditional references; an unresolvable one fails the transaction."""
    for e in entries:
        if not isinstance(e.resource, dict) or e.method not in ("POST", "PUT"):
            continue
        for reference in iter_references(e.resource):
            if reference.startswith(("urn:uuid:", "urn:oid:")) and reference not in ids.by_url:
                raise InvalidRequest(
                    f"Reference '{reference}' names no entry's fullUrl in this transaction",
                    expression=f"Bundle.entry[{e.index}].resource",
                )
            if (
                "?" in reference
                and reference not in ids.conditional
                and not reference.startswith("http")
            ):
                res_type, _, query = reference.partition("?")
                try:
                    check_type(res_type)
                    matches = await find_matches(session, res_type, _criteria(query))
                except FhirError as error:
                    raise _at_entry(error, e.index) from None
                if len(matches) != 1:
                    found = "no" if not matches else "several"
                    raise PreconditionFailed(
                        f"Conditional reference '{reference}' matches {found} resources; it must match one"
                    )
                ids.conditional[reference] = f"{res_type}/{matches[0]}"
        rewrite_references(e.resource, ids.rewrite)


async def _write_plain(
    session: Session, entries: list[Entry], *, upsert: bool
) -> dict[int, FhirResult]:
    """Creates with known ids, validated then written together with COPY: the ingest fast path.

    With ``upsert`` (the loader, whose ids are stable), an id that exists already becomes an
    update, and unchanged content makes no new version.
    """
    at = now()
    existing = (
        await session.current_many([(e.path[0], e.assigned_id or "") for e in entries])
        if upsert
        else {}
    )
    fresh: list[tuple[Entry, PreparedVersion]] = []
    results: dict[int, FhirResult] = {}
    for e in entries:
        # prepare() refuses what it cannot store (a Consent it cannot enforce): that error,
        # too, names its entry.
        try:
            if not e.validated:
                write.check_valid(e.resource, expected_type=e.path[0])
            e.resource["id"] = e.assigned_id
            current = existing.get((e.path[0], e.assigned_id or ""))
            if current is None:
                fresh.append((e, prepare(e.resource, version_id=1, last_updated=at)))
                continue
            digest = content_hash(e.resource)
            if not current.deleted and current.content_hash == digest:
                results[e.index] = FhirResult(status=200, version=current, unchanged=True)
                continue
            p = prepare(
                e.resource, version_id=current.version_id + 1, last_updated=at, digest=digest
            )
        except FhirError as error:
            raise _at_entry(error, e.index) from None
        await session.replace(p)
        results[e.index] = FhirResult(
            status=201 if current.deleted else 200, version=_version(p, at)
        )
    await session.insert_many([p for _, p in fresh])
    results.update((e.index, FhirResult(status=201, version=_version(p, at))) for e, p in fresh)
    return results


def _version(p: PreparedVersion, at: datetime) -> StoredVersion:
    return StoredVersion(p.res_type, p.id, p.version_id, at, False, p.content, p.content_hash)


def _sub_request(e: Entry, parent: FhirRequest) -> FhirRequest:
    headers = {}
    if e.if_match:
        headers["if-match"] = e.if_match
    if e.if_none_exist:
        headers["if-none-exist"] = e.if_none_exist
    return FhirRequest(
        method=e.method,
        path=e.path,
        params=e.params,
        headers=headers,
        body=e.resource,
        base=parent.base,
        visibility=parent.visibility,
    )


async def run_transaction(
    repository: Repository, entries: list[Entry], request: FhirRequest, *, upsert: bool = False
) -> dict[int, FhirResult]:
    """Run entries as one transaction; results by entry index. Raises on the first failure."""
    results: dict[int, FhirResult] = {}
    for e in entries:
        if e.path[:1] == (READ_ONLY_TYPE,) and e.method not in ("GET", "HEAD"):
            raise _at_entry(read_only(), e.index)
    async with repository.session(visibility=request.visibility) as session:
        ids = _Identities(request.base)
        await _settle_identities(session, entries, ids)
        await _resolve_references(session, entries, ids)
        _check_overlap(entries)
        ordered = sorted(entries, key=lambda e: _ORDER[e.method])
        plain = [e for e in ordered if e.method == "POST" and not e.if_none_exist]
        for e in ordered:
            if e.method == "POST" and plain:
                results.update(await _write_plain(session, plain, upsert=upsert))
                plain = []
            if e.index in results:
                continue
            try:
                if e.method == "POST":
                    if e.existing:
                        current = await session.current(e.path[0], e.existing)
                        results[e.index] = FhirResult(status=200, version=current)
                    else:
                        results[e.index] = await create.create(
                            session, e.path[0], e.resource, id=e.assigned_id
                        )
                else:
                    results[e.index] = await dispatch(session, _sub_request(e, request))
            except FhirError as error:
                raise _at_entry(error, e.index) from None
        if request.audit_hook is not None:  # in the same transaction, before it commits
            await request.audit_hook(session, request, list(results.values()))
    return results


async def transaction(repository: Repository, request: FhirRequest) -> FhirResult:
    entries = parse_entries(request.body, request.base)
    results = await run_transaction(repository, entries, request)
    prefer = request.headers.get("prefer", "")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response(results[e.index], prefer, e.method) for e in entries],
    }
    return FhirResult(status=200, body=bundle)


def _check_overlap(entries: list[Entry]) -> None:
    """R4 #trules: a resource may be the target of only one write in a transaction."""
    seen: dict[tuple[str, str], int] = {}
    for e in entries:
        if e.method == "POST" and e.existing is None:
            continue
        if (e.method in ("DELETE", "PUT", "PATCH") and len(e.path) == 2) or e.existing:
            key = (e.path[0], e.existing or e.path[1])
            if key in seen:
                raise InvalidRequest(
                    f"{key[0]}/{key[1]} is the target of entries {seen[key]} and {e.index}; a transaction"
                    " may change a resource only once",
                    expression=f"Bundle.entry[{e.index}]",
                )
            seen[key] = e.index


async def batch(repository: Repository, request: FhirRequest) -> FhirResult:
    entries: list[dict[str, Any]] = []
    prefer = request.headers.get("prefer", "")
    for e in parse_entries(request.body, request.base):
        try:
            async with repository.session(
                write=e.method not in ("GET", "HEAD"), visibility=request.visibility
            ) as session:
                sub = _sub_request(e, request)
                result = await dispatch(session, sub)
                if request.audit_hook is not None:
                    await request.audit_hook(session, sub, [result])
            entries.append(_response(result, prefer, e.method))
        except FhirError as error:
            located = _at_entry(error, e.index)
            entries.append(
                {"response": {"status": _status_line(error.status), "outcome": located.outcome()}}
            )
    return FhirResult(
        status=200, body={"resourceType": "Bundle", "type": "batch-response", "entry": entries}
    )


async def process(repository: Repository, request: FhirRequest) -> FhirResult:
    """POST [base] with a batch or transaction Bundle."""
    body = request.body
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidRequest("POST to the base URL takes a batch or transaction Bundle")
    kind = body.get("type")
    if kind == "transaction":
        return await transaction(repository, request)
    if kind == "batch":
        return await batch(repository, request)
    raise InvalidRequest(
        f"Bundle.type must be 'batch' or 'transaction', not {kind!r}", expression="Bundle.type"
    )
