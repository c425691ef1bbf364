"""Type-level search (R4 search.html) over ``_id``, ``_lastUpdated`` and ``identifier``.

Results are ordered by id; paging is by offset. Unknown parameters are ignored and reported
in an OperationOutcome entry under ``Prefer: handling=lenient`` (the default) and refused with
400 under ``handling=strict`` (R4 search.html#errors). The search issue extends this to every
parameter.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from healthmesh.fhir.errors import Issue, operation_outcome
from healthmesh.fhir.summary import check_summary
from healthmesh.interactions.bundles import link, resource_view
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.paging import page_params
from healthmesh.store.criteria import compile_criteria
from healthmesh.store.repository import Session


def _strict(request: FhirRequest) -> bool:
    prefer = request.headers.get("prefer", "")
    return "handling=strict" in prefer.replace(" ", "")


async def search(session: Session, request: FhirRequest, res_type: str) -> FhirResult:
    criteria = compile_criteria(request.params, strict=_strict(request))
    count, offset = page_params(request)
    summary = check_summary(request.param("_summary"))
    elements = request.param("_elements")
    total_mode = request.param("_total")
    where = sql.SQL("r.res_type = {t} AND NOT r.deleted AND ({w})").format(
        t=sql.Literal(res_type), w=criteria.condition
    )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    total: int | None = None
    if summary == "count" or total_mode == "accurate":
        rows = await session.fetch(
            sql.SQL("SELECT count(*) FROM resource r WHERE {w}").format(w=where)
        )
        total = int(rows[0][0])
    rows = []
    if summary != "count" and count > 0:
        rows = await session.fetch(
            sql.SQL(
                "SELECT r.id, r.content FROM resource r WHERE {w} ORDER BY r.id LIMIT {n} OFFSET {o}"
            ).format(w=where, n=sql.Literal(count + 1), o=sql.Literal(offset))
        )
    has_next = len(rows) > count
    if total is None and not has_next and summary != "count" and total_mode != "none":
        total = offset + len(rows)  # the last page: the total is known for free
    if total is not None:
        bundle["total"] = total
    shown = [*criteria.used]
    for name in ("_summary", "_elements", "_total"):
        if request.param(name) is not None:
            shown.append((name, request.param(name) or ""))
    paging = [("_count", str(count))]
    links = [link("self", request.base, res_type, [*shown, *paging, ("__offset", str(offset))])]
    if has_next:
        links.append(
            link(
                "next", request.base, res_type, [*shown, *paging, ("__offset", str(offset + count))]
            )
        )
    if offset > 0:
        prev = str(max(0, offset - count))
        links.append(
            link("previous", request.base, res_type, [*shown, *paging, ("__offset", prev)])
        )
    bundle["link"] = links
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{request.base}/{res_type}/{id}",
            "resource": resource_view(content, summary=summary, elements=elements),
            "search": {"mode": "match"},
        }
        for id, content in rows[:count]
    ]
    if criteria.ignored:
        issues = [
            Issue(
                severity="warning",
                code="not-supported",
                diagnostics=f"Search parameter '{name}' is not supported and was ignored",
                expression=name,
            )
            for name in criteria.ignored
        ]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResult(status=200, body=bundle)
