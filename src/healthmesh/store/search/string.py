"""String search (R4 search.html#string): starts-with, case- and accent-insensitive; :exact, :contains."""

from __future__ import annotations

from psycopg import sql

from healthmesh.fhir.search.normalize import normalize
from healthmesh.fhir.search.query import Clause
from healthmesh.store.search.sqlbits import any_of, col, like_contains, like_prefix


def value_condition(clause: Clause, i: sql.Identifier, raw: str) -> sql.Composable:
    if clause.modifier == "exact":
        return sql.SQL("{} = {}").format(col(i, "exact"), sql.Literal(raw))
    pattern = (
        like_contains(normalize(raw))
        if clause.modifier == "contains"
        else like_prefix(normalize(raw))
    )
    return sql.SQL("{} LIKE {}").format(col(i, "norm"), sql.Literal(pattern))


def condition(clause: Clause, i: sql.Identifier) -> sql.Composable:
    return any_of([value_condition(clause, i, v) for v in clause.values])
