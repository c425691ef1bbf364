"""Type-level search (R4 search.html): every parameter, modifier and chain the compiler knows.

Unknown parameters are ignored and reported in an OperationOutcome entry under
``Prefer: handling=lenient`` (the default) and refused with 400 under ``handling=strict``
(R4 search.html#errors). Results are ordered by ``_sort`` (then type and id) or by (type, id),
and paged by keyset: a cursor of the page's last row, so writes between pages shift nothing.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from healthmesh.fhir.errors import (
    Forbidden,
    InvalidRequest,
    Issue,
    NotSupported,
    operation_outcome,
)
from healthmesh.fhir.search.query import parse_query
from healthmesh.fhir.structure import is_resource_type
from healthmesh.fhir.summary import check_summary
from healthmesh.interactions.bundles import link, resource_view
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.id_paging import Select, keyset_page, repeated
from healthmesh.interactions.paging import page_params
from healthmesh.interactions.sort_cursor import SortCursor, decode_cursor, encode_cursor
from healthmesh.interactions.valuesets import expand_value_sets
from healthmesh.store.repository import Session
from healthmesh.store.search.compiler import Compiler, parse_sort
from healthmesh.store.search.includes import Include, include_query, parse_include
from healthmesh.store.search.keyset import SortColumn, page_query, position
from healthmesh.store.search.tables import SYSTEM
from healthmesh.store.statements import Constant

MAX_INCLUDE_ROUNDS = 4  # :iterate depth bound


def strict_handling(request: FhirRequest) -> bool:
    prefer = request.headers.get("prefer", "")
    return "handling=strict" in prefer.replace(" ", "")


def _includes(request: FhirRequest) -> list[Include]:
    return [
        parse_include(name, value)
        for name, value in request.params
        if name.split(":")[0] in ("_include", "_revinclude")
    ]


async def _included(
    session: Session,
    includes: list[Include],
    matches: list[tuple[str, str]],
    visible: sql.Composable,
) -> list[tuple[str, str, str]]:
    seen = set(matches)
    found: list[tuple[str, str, str]] = []
    frontier = matches
    for round_ in range(MAX_INCLUDE_ROUNDS):
        active = [inc for inc in includes if round_ == 0 or inc.iterate]
        if not active or not frontier:
            break
        new: list[tuple[str, str]] = []
        for inc in active:
            for res_type, id, content in await session.fetch(include_query(inc, frontier, visible)):
                if (res_type, id) not in seen:
                    seen.add((res_type, id))
                    new.append((res_type, id))
                    found.append((res_type, id, content))
        frontier = new
    return found


def check_search_allowed(session: Session, res_type: str) -> None:
    """403 when the token's scopes allow searching no row of ``res_type`` at all."""
    visibility = session.visibility
    if visibility is None:
        return
    if res_type == SYSTEM:
        if visibility.types_covered("s") == frozenset():
            raise Forbidden("This token's scopes permit no search")
    elif not visibility.covers(res_type, "s"):
        raise Forbidden(f"This token's scopes do not permit searching {res_type}")


def requested_types(request: FhirRequest) -> list[str]:
    """``_type=Patient,Observation`` for a search across types; all types when absent."""
    raw = request.param("_type")
    if raw is None:
        return []
    types = [t.strip() for t in raw.split(",") if t.strip()]
    for t in types:
        if not is_resource_type(t):
            raise InvalidRequest(
                f"_type names '{t}', which is not a resource type", expression="_type"
            )
    return types


def _matching(where: sql.Composable) -> Select:
    def select(after: sql.Composable, order: sql.Composable, limit: int) -> sql.Composed:
        return sql.SQL(
            "SELECT r.res_type, r.id, r.content FROM resource r WHERE {w} AND {a}"
            " ORDER BY {o} LIMIT {n}"
        ).format(w=where, a=after, o=order, n=sql.Literal(limit))

    return select


def _sort_cursor(
    request: FhirRequest, name: str, sort: str, columns: list[SortColumn]
) -> SortCursor | None:
    raw = request.param(name)
    if raw is None:
        return None
    return decode_cursor(raw, name, sort, [column.type for column in columns])


async def _sorted_page(
    session: Session,
    request: FhirRequest,
    where: sql.Composable,
    columns: list[SortColumn],
    sort: str,
    count: int,
    path: str,
    kept: list[tuple[str, str]],
) -> tuple[list[tuple[Any, ...]], bool, list[dict[str, str]], bool]:
    """A page of a ``_sort``-ed search after or before a cursor of sort values
    (store/search/keyset.py): writes between pages shift no unmodified resource.

    ``__offset`` (the links this server made before cursors) still pages by offset for
    that one page; its own next and previous links are cursors. The last value says
    whether this is the first page.
    """
    after = _sort_cursor(request, "__after", sort, columns)
    before = _sort_cursor(request, "__before", sort, columns)
    if after is not None and before is not None:
        raise InvalidRequest("__after and __before cannot both be given", expression="__before")
    cursor = after or before
    offset = 0 if cursor is not None else page_params(request)[1]
    condition = (
        None
        if cursor is None
        else position(columns, cursor.values, cursor.res_type, cursor.id, before=before is not None)
    )
    rows: list[tuple[Any, ...]] = []
    if count > 0:
        rows = await session.fetch(
            page_query(
                where,
                columns,
                condition=condition,
                reverse=before is not None,
                limit=count + 1,
                offset=offset,
            )
        )
    # _count=0 looks at no row, so whether any match is not known: not "no more".
    more = len(rows) > count if count > 0 else True
    page = rows[:count]
    if before is not None:
        page.reverse()

    def at(row: tuple[Any, ...]) -> str:
        return encode_cursor(SortCursor(sort, tuple(row[3:]), row[0], row[1]))

    paging = [("_count", str(count))]
    current = (
        [("__after", request.param("__after") or "")]
        if after
        else [("__before", request.param("__before") or "")]
        if before
        else [("__offset", str(offset))]
        if offset
        else []
    )
    links = [link("self", request.base, path, [*kept, *paging, *current])]
    has_next = more if before is None else bool(page)
    if has_next and page:
        links.append(link("next", request.base, path, [*kept, *paging, ("__after", at(page[-1]))]))
    has_previous = (after is not None or offset > 0) if before is None else more
    if has_previous and page:
        links.append(
            link("previous", request.base, path, [*kept, *paging, ("__before", at(page[0]))])
        )
    first = cursor is None and offset == 0
    return [row[:3] for row in page], more if before is None else True, links, first


async def search(
    session: Session,
    request: FhirRequest,
    res_type: str,
    *,
    scope: sql.Composable | None = None,
    link_path: str | None = None,
) -> FhirResult:
    """Search ``res_type`` (``Resource``: every type, or those ``_type`` names).

    ``scope`` is a further condition on ``r`` (a compartment), ``link_path`` the path the
    paging links repeat.
    """
    parsed = parse_query(res_type, request.params)
    parsed.clauses = await expand_value_sets(session, parsed.clauses)
    if parsed.unknown and strict_handling(request):
        raise NotSupported(
            f"Unknown search parameter '{parsed.unknown[0]}' for {res_type}",
            expression=parsed.unknown[0],
        )
    count, _ = page_params(request)
    summary = check_summary(request.param("_summary"))
    elements = request.param("_elements")
    total_mode = request.param("_total")
    sort = parse_sort(request.param("_sort"))
    includes = _includes(request)
    compiler = Compiler(request.base, visibility=session.visibility)
    r = sql.Identifier("r")
    check_search_allowed(session, res_type)
    if res_type == SYSTEM:
        types = requested_types(request)
        kind = (
            sql.SQL("r.res_type = ANY({})").format(sql.Literal(types)) if types else sql.SQL("true")
        )
    else:
        kind = sql.SQL("r.res_type = {}").format(Constant(res_type))
    where = sql.SQL("{k} AND NOT r.deleted AND {w} AND {s} AND {v}").format(
        k=kind,
        w=compiler.where(parsed.clauses, r),
        s=scope if scope is not None else sql.SQL("true"),
        v=compiler.visible("s", r, None if res_type == SYSTEM else res_type),
    )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    total: int | None = None
    if total_mode not in (None, "none", "estimate", "accurate"):
        raise InvalidRequest(
            f"_total must be none, estimate or accurate, not '{total_mode}'", expression="_total"
        )
    # A planner estimate counts rows the caller may not see (statistics know nothing of
    # scopes, Consents or labels), so a restricted caller's estimate is the accurate count.
    estimated = total_mode == "estimate" and session.visibility is None
    if (
        summary == "count"
        or total_mode == "accurate"
        or (total_mode == "estimate" and not estimated)
        # _count=0: no entries, only how many there are (R5 search.html#count; what clients
        # of R4 servers ask it for too, as of _summary=count), unless _total says otherwise.
        or (count == 0 and total_mode is None)
    ):
        # One plain clause (`Observation?code=X&_summary=count`): count its index rows'
        # distinct ids, index-only: 32k matches at 1M resources, 70 ms where counting them
        # through their resource rows took 540 ms (docs/PERFORMANCE.md#search).
        ids = (
            compiler.matching_ids(parsed.clauses[0])
            # Only unrestricted: index rows know nothing of scopes, consent or labels.
            if len(parsed.clauses) == 1
            and scope is None
            and res_type != SYSTEM
            and session.visibility is None
            else None
        )
        counting = (
            sql.SQL("SELECT count(*) FROM ({}) m").format(ids)
            if ids is not None
            else sql.SQL("SELECT count(*) FROM resource r WHERE {w}").format(w=where)
        )
        rows = await session.fetch(counting)
        total = int(rows[0][0])
    elif estimated:
        # The planner's estimate (R4 search.html#total): cheap, and close with fresh statistics.
        rows = await session.fetch(
            sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM resource r WHERE {w}").format(w=where)
        )
        total = int(rows[0][0][0]["Plan"]["Plan Rows"])
    path = link_path if link_path is not None else ("" if res_type == SYSTEM else res_type)
    kept = repeated(request)
    paging = [("_count", str(count))]
    if summary == "count":
        count = 0  # the total alone: no page to fetch
    if sort:
        page, has_next, links, first_page = await _sorted_page(
            session,
            request,
            where,
            compiler.sort_columns(res_type, sort, r),
            ",".join(("-" if key.descending else "") + key.code for key in sort),
            count,
            path,
            kept,
        )
    else:
        page, has_next, links = await keyset_page(
            session, request, _matching(where), count, path, kept
        )
        first_page = request.param("__after") is None and request.param("__before") is None
    if (
        total is None
        and not has_next
        and first_page
        and summary != "count"
        and total_mode != "none"
    ):
        total = len(page)  # everything fits on the first page: the total is known for free
    if total is not None:
        bundle["total"] = total
    if summary == "count":
        links = [link("self", request.base, path, [*kept, *paging])]
    bundle["link"] = links
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{request.base}/{row_type}/{id}",
            "resource": resource_view(content, summary=summary, elements=elements),
            "search": {"mode": "match"},
        }
        for row_type, id, content in page
    ]
    if includes and page:
        visible = compiler.visible("s", sql.Identifier("t"), None)
        for inc_type, inc_id, content in await _included(
            session, includes, [(row_type, id) for row_type, id, _ in page], visible
        ):
            entries.append(
                {
                    "fullUrl": f"{request.base}/{inc_type}/{inc_id}",
                    "resource": resource_view(content, summary=summary, elements=elements),
                    "search": {"mode": "include"},
                }
            )
    if parsed.unknown:
        issues = [
            Issue(
                severity="warning",
                code="not-supported",
                diagnostics=f"Search parameter '{name}' is not known for {res_type} and was ignored",
                expression=name,
            )
            for name in parsed.unknown
        ]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return FhirResult(status=200, body=bundle)
