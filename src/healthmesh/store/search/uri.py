"""URI search (R4 search.html#uri): exact; :below by path prefix, :above the other way."""

from __future__ import annotations

from psycopg import sql

from healthmesh.fhir.search.query import Clause
from healthmesh.store.search.sqlbits import any_of, col, like_prefix

# For :above the stored uri is the pattern: escape its LIKE wildcards inside SQL.
_ESCAPED = "replace(replace(replace({}, '\\', '\\\\'), '%', '\\%'), '_', '\\_')"


def value_condition(clause: Clause, i: sql.Identifier, raw: str) -> sql.Composable:
    uri = col(i, "uri")
    if clause.modifier == "below":
        return sql.SQL("{} LIKE {}").format(uri, sql.Literal(like_prefix(raw)))
    if clause.modifier == "above":
        return sql.SQL("{} LIKE " + _ESCAPED + " || '%'").format(sql.Literal(raw), uri)
    return sql.SQL("{} = {}").format(uri, sql.Literal(raw))


def condition(clause: Clause, i: sql.Identifier) -> sql.Composable:
    return any_of([value_condition(clause, i, v) for v in clause.values])
