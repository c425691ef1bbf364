"""The SQL of an export: one statement per resource type, policy compiled in.

Processing model (export.html#processing-model): the level's patients (all, a Group's
members, ``patient``), then authorization — the caller's scopes, the patients' Consents and
the sensitive-data labels, as store/access.py's Visibility condition on the row — then
``_type``, ``_since``, and ``_typeFilter`` (a resource of a filtered type must match at least
one of its type's queries, compiled by the search compiler). Nothing is filtered after the
query: what the cursor yields is what the file holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import sql

from healthmesh.export.params import ExportRequest
from healthmesh.fhir.search.query import Clause, parse_query
from healthmesh.store.access import Visibility, compartment_types
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.search.sqlbits import TRUE, all_of, any_of

# The types that have at least one row, by a skip scan of the primary key (one index probe
# per type instead of reading every row).
EXISTING_TYPES = sql.SQL(
    "WITH RECURSIVE t(res_type) AS ("
    " (SELECT res_type FROM resource ORDER BY res_type LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT r.res_type FROM resource r WHERE r.res_type > t.res_type"
    "  ORDER BY r.res_type LIMIT 1) FROM t WHERE t.res_type IS NOT NULL)"
    " SELECT res_type FROM t WHERE res_type IS NOT NULL"
)


def export_types(
    request: ExportRequest, visibility: Visibility | None, existing: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(the types to export, warnings). Without ``_type``: every stored type the caller may
    read (and, for Patient and Group exports, that a patient's compartment holds). Types the
    caller may not read at all were refused at kick-off when named."""
    warnings: list[str] = []
    wanted = list(request.types) if request.types else sorted(existing)
    if request.level != "system":
        inside = compartment_types()
        for t in wanted:
            if request.types and t not in inside:
                warnings.append(
                    f"_type: {t} is not in the Patient compartment; a {request.level}-level"
                    " export holds only patients' data"
                )
        wanted = [t for t in wanted if t in inside]
    if visibility is not None:
        wanted = [t for t in wanted if visibility.covers(t, "r")]
    return wanted, warnings


def group_members(content: str) -> list[str]:
    """The Patient ids of a Group's active members (Group.member.entity, .inactive)."""
    group: dict[str, Any] = orjson.loads(content)
    found: list[str] = []
    for member in group.get("member") or ():
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference")
        if not isinstance(reference, str):
            continue
        parts = reference.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] not in found:
            found.append(parts[-1])
    return found


def filter_clauses(request: ExportRequest, res_type: str) -> list[list[Clause]]:
    """The parsed ``_typeFilter`` queries of ``res_type`` (validated at kick-off)."""
    return [parse_query(res_type, list(q)).clauses for q in request.filters.get(res_type, ())]


def patients_condition(
    request: ExportRequest, members: list[str] | None, r: sql.Identifier
) -> sql.Composable:
    """The level's patients: everyone (system), every patient (Patient), the members."""
    if request.level == "system":
        if request.patients:
            return sql.SQL("{}.patient_id = ANY({})").format(r, sql.Literal(list(request.patients)))
        return TRUE
    ids: list[str] | None = members
    if request.patients:
        chosen = list(request.patients)
        ids = chosen if ids is None else [p for p in ids if p in set(chosen)]
    if ids is None:
        return sql.SQL("{}.patient_id IS NOT NULL").format(r)
    return sql.SQL("{}.patient_id = ANY({})").format(r, sql.Literal(ids))


def type_query(
    request: ExportRequest,
    res_type: str,
    *,
    visibility: Visibility | None,
    filters: list[list[Clause]],
    members: list[str] | None,
    base: str = "",
) -> sql.Composed:
    """SELECT id, patient_id, content of the ``res_type`` rows the export holds."""
    r = sql.Identifier("r")
    compiler = Compiler(base, visibility=visibility)
    parts: list[sql.Composable] = [
        sql.SQL("r.res_type = {}").format(sql.Literal(res_type)),
        sql.SQL("NOT r.deleted"),
        patients_condition(request, members, r),
    ]
    if request.since is not None:
        parts.append(sql.SQL("r.last_updated > {}").format(sql.Literal(request.since)))
    if filters:
        parts.append(any_of([compiler.where(clauses, r) for clauses in filters]))
    parts.append(compiler.visible("r", r, res_type))
    return sql.SQL("SELECT r.id, r.patient_id, r.content FROM resource r WHERE {}").format(
        all_of(parts)
    )
