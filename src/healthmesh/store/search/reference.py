"""Reference search (R4 search.html#reference): id, Type/id, absolute URL, :[Type]."""

from __future__ import annotations

from psycopg import sql

from healthmesh.fhir.ids import parse_relative
from healthmesh.fhir.search.query import Clause
from healthmesh.store.search.sqlbits import all_of, any_of, col


def value_condition(clause: Clause, i: sql.Identifier, raw: str, base: str) -> sql.Composable:
    local = raw[len(base) + 1 :] if base and raw.startswith(base + "/") else raw
    target = parse_relative(local.split("/_history/", 1)[0])
    conds: list[sql.Composable] = []
    if target is not None:
        conds.append(sql.SQL("{} = {}").format(col(i, "target_id"), sql.Literal(target.id)))
        conds.append(
            sql.SQL("{} = {}").format(col(i, "target_type"), sql.Literal(target.resource_type))
        )
    elif "/" not in local and ":" not in local:  # a bare id: any target type
        conds.append(sql.SQL("{} = {}").format(col(i, "target_id"), sql.Literal(local)))
    else:  # an absolute URL to elsewhere, or a canonical
        conds.append(sql.SQL("{} = {}").format(col(i, "target_url"), sql.Literal(raw)))
    if clause.target_type:
        conds.append(
            sql.SQL("{} = {}").format(col(i, "target_type"), sql.Literal(clause.target_type))
        )
    return all_of(conds)


def condition(clause: Clause, i: sql.Identifier, base: str) -> sql.Composable:
    return any_of([value_condition(clause, i, v, base) for v in clause.values])
