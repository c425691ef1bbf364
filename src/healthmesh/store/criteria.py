"""Search criteria compiled to one SQL condition on the ``resource r`` row.

Supported here: ``_id``, ``_lastUpdated`` (all nine prefixes) and the token parameter
``identifier`` — what type-level search, conditional create/update/delete and conditional
references need. Repeated parameters AND, comma-separated values OR (R4 search.html#combining).
Values are always bound as literals through psycopg's composition, never formatted in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest, NotSupported
from healthmesh.fhir.search_values import DateValue, parse_date, parse_token, split_or

# Parameters that shape results rather than select them (R4 search.html#Summary ...).
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_summary",
        "_elements",
        "_total",
        "_include",
        "_revinclude",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
        "__offset",  # the server's own paging cursor, in next/previous links
        "__until",
    }
)
SUPPORTED = frozenset({"_id", "_lastUpdated", "identifier"})


@dataclass(slots=True)
class Criteria:
    condition: sql.Composable
    used: list[tuple[str, str]] = field(default_factory=list)  # the parameters applied
    ignored: list[str] = field(default_factory=list)  # unknown parameter names (lenient)


def _date_condition(column: sql.Composable, value: DateValue) -> sql.Composable:
    """A point in time (``column``) against a search interval, per prefix (search.html#prefix)."""
    low, high = sql.Literal(value.interval.low), sql.Literal(value.interval.high)
    match value.prefix:
        case "eq":
            return sql.SQL("({c} >= {lo} AND {c} < {hi})").format(c=column, lo=low, hi=high)
        case "ne":
            return sql.SQL("({c} < {lo} OR {c} >= {hi})").format(c=column, lo=low, hi=high)
        case "gt" | "sa":
            return sql.SQL("{c} >= {hi}").format(c=column, hi=high)
        case "ge":
            return sql.SQL("{c} >= {lo}").format(c=column, lo=low)
        case "lt" | "eb":
            return sql.SQL("{c} < {lo}").format(c=column, lo=low)
        case "le":
            return sql.SQL("{c} < {hi}").format(c=column, hi=high)
        case _:  # "ap": within 10 % of the distance from now, the spec's suggested reading
            gap = abs(datetime.now(UTC) - value.interval.low) * 0.1
            return sql.SQL("({c} >= {lo} AND {c} < {hi})").format(
                c=column,
                lo=sql.Literal(value.interval.low - gap),
                hi=sql.Literal(value.interval.high + gap),
            )


def _token_condition(param: str, raw: str) -> sql.Composable:
    token = parse_token(param, raw)
    parts: list[sql.Composable] = [
        sql.SQL("t.res_type = r.res_type AND t.res_id = r.id AND t.param = {p}").format(
            p=sql.Literal(param)
        )
    ]
    if token.code is not None:
        parts.append(sql.SQL("t.code = {c}").format(c=sql.Literal(token.code)))
    if token.system == "":
        parts.append(sql.SQL("t.system IS NULL"))
    elif token.system is not None:
        parts.append(sql.SQL("t.system = {s}").format(s=sql.Literal(token.system)))
    return sql.SQL("EXISTS (SELECT 1 FROM search_token t WHERE {w})").format(
        w=sql.SQL(" AND ").join(parts)
    )


def _one(name: str, value: str) -> sql.Composable:
    values = split_or(value)
    if name == "_id":
        return sql.SQL("r.id = ANY({v})").format(v=sql.Literal(values))
    if name == "_lastUpdated":
        conditions = [
            _date_condition(sql.SQL("r.last_updated"), parse_date(name, v)) for v in values
        ]
    else:
        conditions = [_token_condition(name, v) for v in values]
    return sql.SQL("({})").format(sql.SQL(" OR ").join(conditions))


def compile_criteria(params: Sequence[tuple[str, str]], *, strict: bool) -> Criteria:
    """Compile search parameters; unknown ones are ignored (lenient) or refused (strict).

    Conditional operations always pass ``strict=True``: ignoring a condition there would
    widen the match and update or delete the wrong resources.
    """
    conditions: list[sql.Composable] = []
    criteria = Criteria(sql.SQL("true"))
    for name, value in params:
        base, _, modifier = name.partition(":")
        if base in RESULT_PARAMETERS:
            continue
        if base not in SUPPORTED:
            if strict:
                raise NotSupported(
                    f"Search parameter '{name}' is not supported here", expression=name
                )
            criteria.ignored.append(name)
            continue
        if modifier:
            raise InvalidRequest(
                f"Modifier ':{modifier}' is not supported on {base}", expression=name
            )
        conditions.append(_one(base, value))
        criteria.used.append((name, value))
    if conditions:
        criteria.condition = sql.SQL(" AND ").join(conditions)
    return criteria
