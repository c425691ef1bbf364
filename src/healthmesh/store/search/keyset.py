"""Keyset paging in a ``_sort`` order: the rows after (or before) a cursor, by value.

The order is each sort key in its direction, NULLS LAST (a resource without the value comes
after every one with it, whichever the direction: R4 leaves it to the server), then
(res_type, id), which no two rows share, so the order is total and a page boundary is one
point in it. The page condition is the row-value comparison "after the cursor" spelled out
key by key, because the directions may be mixed and a row value cannot say NULLS LAST:

    k1 after c1  OR  (k1 = c1 AND k2 after c2)  OR  ...  OR  (all equal AND (type, id) > (ct, ci))

where, NULLS LAST, "k after c" is ``k > c OR k IS NULL`` ascending (``k < c OR k IS NULL``
descending), nothing is after a null, and "equal" to a null is ``IS NULL``. Writes between
pages move only the rows written, so an unmodified row is never shown twice or skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

# The SQL type of a sort key's values, as the cursor carries them (printed as text).
SortType = Literal["text", "timestamp", "numeric"]

PAGE = sql.Identifier("page")  # the alias of the matches, sort values computed once each


@dataclass(frozen=True, slots=True)
class SortColumn:
    """One ``_sort`` key compiled: its value on the searched row and how it orders."""

    value: sql.Composable
    type: SortType
    subquery: bool  # read from the index rows (not a column of the resource row)
    descending: bool


def _key(n: int) -> sql.Composable:
    return sql.SQL("{}.{}").format(PAGE, sql.Identifier(f"k{n}"))


def printed(column: SortColumn, value: sql.Composable) -> sql.Composable:
    """The value as text that :func:`typed` reads back exactly: numeric's text is exact; a
    timestamptz is printed in UTC so the session's TimeZone cannot change it."""
    if column.type == "timestamp":
        return sql.SQL("(({}) AT TIME ZONE 'UTC')::text").format(value)
    if column.type == "numeric":
        return sql.SQL("({})::text").format(value)
    return value


def typed(column: SortColumn, text: str) -> sql.Composable:
    """A cursor's value (checked by interactions/sort_cursor.py) as the key's type."""
    if column.type == "timestamp":
        return sql.SQL("({}::timestamp AT TIME ZONE 'UTC')").format(sql.Literal(text))
    if column.type == "numeric":
        return sql.SQL("{}::numeric").format(sql.Literal(text))
    return sql.SQL("{}::text").format(sql.Literal(text))


def order(columns: Sequence[SortColumn], *, reverse: bool) -> sql.Composable:
    """ORDER BY over the page's keys; ``reverse`` walks it backwards (a previous page)."""
    parts: list[sql.Composable] = []
    for n, column in enumerate(columns):
        if not reverse:
            how = "DESC NULLS LAST" if column.descending else "ASC NULLS LAST"
        else:
            how = "ASC NULLS FIRST" if column.descending else "DESC NULLS FIRST"
        parts.append(sql.SQL("{} {}").format(_key(n), sql.SQL(how)))
    tie = "DESC" if reverse else "ASC"
    parts.append(sql.SQL("{p}.res_type {d}, {p}.id {d}").format(p=PAGE, d=sql.SQL(tie)))
    return sql.SQL(", ").join(parts)


def position(
    columns: Sequence[SortColumn],
    values: Sequence[str | None],
    res_type: str,
    id: str,
    *,
    before: bool,
) -> sql.Composable:
    """The rows strictly after (``before``: before) the cursor row in :func:`order`."""
    disjuncts: list[sql.Composable] = []
    equal: list[sql.Composable] = []
    for n, (column, value) in enumerate(zip(columns, values, strict=True)):
        k = _key(n)
        step: sql.Composable | None
        if value is None:
            # NULLS LAST: nothing follows a null; every value precedes it.
            step = sql.SQL("{} IS NOT NULL").format(k) if before else None
            same: sql.Composable = sql.SQL("{} IS NULL").format(k)
        else:
            c = typed(column, value)
            op = ">" if column.descending == before else "<"  # ascending after, descending before
            if before:
                step = sql.SQL("{} {} {}").format(k, sql.SQL(op), c)
            else:
                step = sql.SQL("({k} {op} {c} OR {k} IS NULL)").format(k=k, op=sql.SQL(op), c=c)
            same = sql.SQL("{} = {}").format(k, c)
        if step is not None:
            disjuncts.append(sql.SQL(" AND ").join([*equal, step]))
        equal.append(same)
    tie = sql.SQL("({p}.res_type, {p}.id) {op} ({t}, {i})").format(
        p=PAGE, op=sql.SQL("<" if before else ">"), t=sql.Literal(res_type), i=sql.Literal(id)
    )
    disjuncts.append(sql.SQL(" AND ").join([*equal, tie]))
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(sql.SQL("({})").format(d) for d in disjuncts)
    )


def page_query(
    where: sql.Composable,
    columns: Sequence[SortColumn],
    *,
    condition: sql.Composable | None,
    reverse: bool,
    limit: int,
    offset: int = 0,
) -> sql.Composed:
    """``SELECT res_type, id, content, <each key printed>`` of one page.

    The matches are a subquery naming each sort value once, so the ORDER BY and the page
    condition read the same value. A value read from the index rows is a correlated
    subquery, and PostgreSQL would copy it into every place it is used if it flattened the
    subquery: ``OFFSET 0`` keeps it whole, computed once a match (the sort needs every
    match's value anyway). With column keys alone (_id, _lastUpdated) it may flatten, and
    an index on the column can still deliver the order.
    """
    named = sql.SQL("").join(
        sql.SQL(", {} AS {}").format(column.value, sql.Identifier(f"k{n}"))
        for n, column in enumerate(columns)
    )
    fence = sql.SQL(" OFFSET 0") if any(column.subquery for column in columns) else sql.SQL("")
    shown = sql.SQL("").join(
        sql.SQL(", {}").format(printed(column, _key(n))) for n, column in enumerate(columns)
    )
    return sql.SQL(
        "SELECT {p}.res_type, {p}.id, {p}.content{shown} FROM"
        " (SELECT r.res_type, r.id, r.content{named} FROM resource r WHERE {w}{fence}) {p}"
        " WHERE {c} ORDER BY {o} LIMIT {n}{off}"
    ).format(
        p=PAGE,
        shown=shown,
        named=named,
        w=where,
        fence=fence,
        c=condition if condition is not None else sql.SQL("true"),
        o=order(columns, reverse=reverse),
        n=sql.Literal(limit),
        off=sql.SQL(" OFFSET {}").format(sql.Literal(offset)) if offset else sql.SQL(""),
    )
