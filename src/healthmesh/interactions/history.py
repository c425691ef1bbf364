"""history at instance, type and system level (R4 http.html#history).

Newest first. ``_since`` keeps versions made at or after an instant; ``_at`` keeps versions
that were current at some point in the given period. Paging is by offset within a fixed upper
time bound carried in the links (``__until``), so versions written after the first page do not
shift later pages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from healthmesh.fhir.dates import parse_instant, parse_interval
from healthmesh.fhir.errors import Forbidden, InvalidRequest, NotFound
from healthmesh.interactions.bundles import history_entry
from healthmesh.interactions.context import FhirRequest, FhirResult, check_id
from healthmesh.interactions.paging import offset_links, page_params
from healthmesh.store.repository import Session, StoredVersion
from healthmesh.store.rows import format_instant, now

_COLS = sql.SQL("res_type, id, version_id, last_updated, deleted, content")


def _successor_after(table: str, low: datetime) -> sql.Composable:
    # A version stopped being current when its successor was written.
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM {t} n WHERE n.res_type = v.res_type AND n.id = v.id"
        " AND n.version_id = v.version_id + 1 AND n.last_updated <= {lo})"
    ).format(t=sql.Identifier(table), lo=sql.Literal(low))


def _conditions(
    request: FhirRequest, res_type: str | None, id: str | None, until: datetime
) -> list[sql.Composable]:
    conds: list[sql.Composable] = [sql.SQL("v.last_updated <= {u}").format(u=sql.Literal(until))]
    if res_type is not None:
        conds.append(sql.SQL("v.res_type = {t}").format(t=sql.Literal(res_type)))
    if id is not None:
        conds.append(sql.SQL("v.id = {i}").format(i=sql.Literal(id)))
    since = request.param("_since")
    if since is not None:
        moment = parse_instant(since)
        if moment is None:
            raise InvalidRequest(f"_since '{since}' is not an instant", expression="_since")
        conds.append(sql.SQL("v.last_updated >= {s}").format(s=sql.Literal(moment)))
    at = request.param("_at")
    if at is not None:
        interval = parse_interval(at)
        if interval is None:
            raise InvalidRequest(f"_at '{at}' is not a date or dateTime", expression="_at")
        conds.append(sql.SQL("v.last_updated < {hi}").format(hi=sql.Literal(interval.high)))
        conds.append(_successor_after("resource", interval.low))
        conds.append(_successor_after("resource_history", interval.low))
    return conds


async def history(
    session: Session, request: FhirRequest, res_type: str | None = None, id: str | None = None
) -> FhirResult:
    if id is not None:
        check_id(id)
    count, offset = page_params(request, default=50)
    until_raw = request.param("__until")
    until = parse_instant(until_raw) if until_raw else now()
    if until is None:
        raise InvalidRequest("__until is not an instant", expression="__until")
    # Instance history is reading one resource; type and system history list many (search).
    permission = "r" if id is not None else "s"
    visibility = session.visibility
    if (
        visibility is not None
        and res_type is not None
        and not visibility.covers(res_type, permission)
    ):
        raise Forbidden(f"This token's scopes do not permit the history of {res_type}")
    conditions = _conditions(request, res_type, id, until)
    conditions.append(session.visible(permission, sql.Identifier("v"), res_type))
    where = sql.SQL(" AND ").join(conditions)
    query = sql.SQL(
        "SELECT {c} FROM (SELECT {c} FROM resource v WHERE {w}"
        " UNION ALL SELECT {c} FROM resource_history v WHERE {w}) h"
        " ORDER BY last_updated DESC, res_type, id, version_id DESC LIMIT {n} OFFSET {o}"
    ).format(c=_COLS, w=where, n=sql.Literal(count + 1), o=sql.Literal(offset))
    rows = await session.fetch(query)
    missing = id is not None and res_type is not None and not rows and offset == 0
    if missing and await session.readable(res_type or "", id or "") is None:
        raise NotFound(f"{res_type}/{id} is not known")
    versions = [StoredVersion(*row) for row in rows[:count]]
    path = "/".join(p for p in (res_type, id, "_history") if p)
    fixed = [("__until", format_instant(until))]
    links = offset_links(
        request, path, count=count, offset=offset, has_next=len(rows) > count, fixed=fixed
    )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if id is not None and offset == 0 and len(rows) <= count:
        bundle["total"] = len(versions)
    bundle["link"] = links
    bundle["entry"] = [history_entry(request.base, v) for v in versions]
    return FhirResult(status=200, body=bundle)
