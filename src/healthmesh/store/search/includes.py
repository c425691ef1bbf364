"""_include and _revinclude (R4 search.html#include): the resources a page refers to, or that refer to it."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from healthmesh.fhir.definitions import search_params_by_type
from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.structure import is_resource_type
from healthmesh.store.search.tables import TABLES, packed_for, value_source


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str  # the type holding the reference
    param: str | None  # None: every reference parameter (``*``)
    target_type: str | None
    reverse: bool
    iterate: bool


def parse_include(name: str, value: str) -> Include:
    """``Observation:subject[:Patient]``, ``*``, with ``:iterate`` (or R4's old ``:recurse``)."""
    base, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise InvalidRequest(f"{name}: unknown modifier ':{modifier}'", expression=name)
    reverse = base == "_revinclude"
    if value == "*":
        return Include("*", None, None, reverse, bool(modifier))
    parts = value.split(":")
    if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
        raise InvalidRequest(
            f"{name}={value}: expected Type:parameter[:targetType]", expression=name
        )
    source, param = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if param == "*":  # every reference parameter of the source type
        return Include(source, None, target, reverse, bool(modifier))
    definition = search_params_by_type().get(source, {}).get(param) or search_params_by_type().get(
        "Resource", {}
    ).get(param)
    if definition is None or definition.type != "reference":
        raise InvalidRequest(
            f"{name}={value}: {source} has no reference parameter '{param}'", expression=name
        )
    if target is not None and not is_resource_type(target):
        raise InvalidRequest(f"{name}={value}: '{target}' is not a resource type", expression=name)
    return Include(source, param, target, reverse, bool(modifier))


def include_query(
    include: Include, keys: list[tuple[str, str]], visible: sql.Composable | None = None
) -> sql.Composed:
    """Resources reached from (or, reversed, reaching) the resources ``keys``.

    ``visible`` is the caller's access condition on the included row ``t``: an include never
    brings in what a search could not.
    """
    types = [k[0] for k in keys]
    ids = [k[1] for k in keys]
    conds: list[sql.Composable] = []
    if include.param is not None:
        conds.append(sql.SQL("i.param = {}").format(sql.Literal(include.param)))
    if include.source_type != "*":
        conds.append(sql.SQL("i.res_type = {}").format(sql.Literal(include.source_type)))
    if include.target_type is not None:
        conds.append(sql.SQL("i.target_type = {}").format(sql.Literal(include.target_type)))
    where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")
    if include.reverse:
        join = sql.SQL("t.res_type = i.res_type AND t.id = i.res_id")
        keyed = sql.SQL("(i.target_type, i.target_id)")
        # The referrers, looked up by target: for AuditEvents, the view (it scans the trail).
        source: sql.Composable = sql.Identifier(
            value_source(TABLES["reference"], include.source_type, include.param)
        )
    elif packed_for(include.source_type, include.param):
        # An AuditEvent page's references are in its events' packed rows: per event, by key.
        join = sql.SQL("t.res_type = i.target_type AND t.id = i.target_id")
        keyed = sql.SQL("(k.res_type, k.id)")
        source = sql.SQL(
            "unnest({ts}::text[], {ids}::text[]) k(res_type, id)"
            " CROSS JOIN LATERAL audit_rows_reference(k.res_type, k.id)"
        ).format(ts=sql.Literal(types), ids=sql.Literal(ids))
    else:
        join = sql.SQL("t.res_type = i.target_type AND t.id = i.target_id")
        keyed = sql.SQL("(i.res_type, i.res_id)")
        source = sql.Identifier(TABLES["reference"])
    return sql.SQL(
        "SELECT DISTINCT t.res_type, t.id, t.content FROM {tb} i JOIN resource t ON {j}"
        " WHERE {k} IN (SELECT * FROM unnest({ts}::text[], {ids}::text[])) AND {w} AND NOT t.deleted"
        " AND {v}"
    ).format(
        tb=source,
        j=join,
        k=keyed,
        ts=sql.Literal(types),
        ids=sql.Literal(ids),
        w=where,
        v=visible if visible is not None else sql.SQL("true"),
    )
