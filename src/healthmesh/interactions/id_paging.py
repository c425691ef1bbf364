"""Paging in (type, id) order by a cursor: search without ``_sort``, and ``$everything``.

The next link carries the last row's ``Type/id`` (``__after``), the previous link the first's
(``__before``). Ids never change, so writes between pages cannot shift them: no resource is
shown twice or skipped, as an offset would (R4 http.html#paging leaves the links' form to the
server). Each page is an index range, not a count of rows to read past.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.interactions.bundles import link
from healthmesh.interactions.context import FhirRequest
from healthmesh.store.repository import Session

# (a condition on r's (res_type, id) — the cursor's, or true —, ORDER BY, LIMIT) -> the
# page's statement, selecting (res_type, id, content) of ``r``.
Select = Callable[[sql.Composable, sql.Composable, int], sql.Composed]
_FORWARD = sql.SQL("r.res_type, r.id")
_BACKWARD = sql.SQL("r.res_type DESC, r.id DESC")


PAGING_PARAMS = frozenset({"_count", "__offset", "__after", "__before"})


def repeated(request: FhirRequest) -> list[tuple[str, str]]:
    """The request's parameters every page's links repeat: all but the paging ones."""
    return [(k, v) for k, v in request.params if k not in PAGING_PARAMS]


def cursor(request: FhirRequest, name: str) -> tuple[str, str] | None:
    raw = request.param(name)
    if raw is None:
        return None
    res_type, _, id = raw.partition("/")
    if not res_type or not id:
        raise InvalidRequest(f"{name} is a paging cursor Type/id, not '{raw}'", expression=name)
    return res_type, id


async def keyset_page(
    session: Session,
    request: FhirRequest,
    select: Select,
    count: int,
    path: str,
    kept: list[tuple[str, str]],
) -> tuple[list[tuple[Any, ...]], bool, list[dict[str, str]]]:
    """A page in (type, id) order after or before the request's cursor: its rows, whether
    more may follow, and its self/next/previous links (``kept``: the parameters every page
    repeats)."""
    after, before = cursor(request, "__after"), cursor(request, "__before")
    if after is not None and before is not None:
        raise InvalidRequest("__after and __before cannot both be given", expression="__before")
    condition: sql.Composable = sql.SQL("true")
    order: sql.Composable = _FORWARD
    if after is not None:
        condition = sql.SQL("(r.res_type, r.id) > ({}, {})").format(
            sql.Literal(after[0]), sql.Literal(after[1])
        )
    if before is not None:
        condition = sql.SQL("(r.res_type, r.id) < ({}, {})").format(
            sql.Literal(before[0]), sql.Literal(before[1])
        )
        order = _BACKWARD
    rows = await session.fetch(select(condition, order, count + 1)) if count > 0 else []
    # _count=0 looks at no row, so whether any follow is not known: not "no more" (callers
    # would take an empty first page for a total of 0).
    more = len(rows) > count if count > 0 else True
    page = rows[:count]
    if before is not None:
        page.reverse()
    paging = [("_count", str(count))]
    current = (
        [("__after", "/".join(after))]
        if after
        else [("__before", "/".join(before))]
        if before
        else []
    )
    links = [link("self", request.base, path, [*kept, *paging, *current])]
    has_next = more if before is None else bool(page)
    if has_next and page:
        links.append(
            link(
                "next",
                request.base,
                path,
                [*kept, *paging, ("__after", f"{page[-1][0]}/{page[-1][1]}")],
            )
        )
    has_previous = (after is not None) if before is None else more
    if has_previous and page:
        links.append(
            link(
                "previous",
                request.base,
                path,
                [*kept, *paging, ("__before", f"{page[0][0]}/{page[0][1]}")],
            )
        )
    return page, more if before is None else True, links
