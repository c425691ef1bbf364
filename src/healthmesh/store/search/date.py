"""Date search (R4 search.html#date): interval semantics for all nine prefixes.

The stored value covers [low, high); the search value covers [lo, hi). Per the prefix table:
eq — the search range contains the target; gt — the target reaches beyond the search range;
lt — it starts before; sa — it starts after the search range ends; eb — it ends before the
search range starts; ge/le — eq or gt/lt; ne — not eq; ap — overlaps the search range widened
by 10 % of its distance from now.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import sql

from healthmesh.fhir.search.query import Clause
from healthmesh.fhir.search_values import DateValue, parse_date
from healthmesh.store.search.sqlbits import any_of


def range_condition(low: sql.Composable, high: sql.Composable, value: DateValue) -> sql.Composable:
    lo, hi = sql.Literal(value.interval.low), sql.Literal(value.interval.high)
    eq = sql.SQL("({L} >= {lo} AND {H} <= {hi})").format(L=low, H=high, lo=lo, hi=hi)
    gt = sql.SQL("{H} > {hi}").format(H=high, hi=hi)
    lt = sql.SQL("{L} < {lo}").format(L=low, lo=lo)
    match value.prefix:
        case "eq":
            return eq
        case "ne":
            return sql.SQL("NOT {}").format(eq)
        case "gt":
            return gt
        case "lt":
            return lt
        case "ge":
            return sql.SQL("({} OR {})").format(eq, gt)
        case "le":
            return sql.SQL("({} OR {})").format(eq, lt)
        case "sa":
            return sql.SQL("{L} >= {hi}").format(L=low, hi=hi)
        case "eb":
            return sql.SQL("{H} <= {lo}").format(H=high, lo=lo)
        case _:  # ap
            gap = abs(datetime.now(UTC) - value.interval.low) * 0.1
            return sql.SQL("({L} < {hi} AND {H} > {lo})").format(
                L=low,
                H=high,
                lo=sql.Literal(value.interval.low - gap),
                hi=sql.Literal(value.interval.high + gap),
            )


def condition(clause: Clause, low: sql.Composable, high: sql.Composable) -> sql.Composable:
    return any_of([range_condition(low, high, parse_date(clause.name, v)) for v in clause.values])
