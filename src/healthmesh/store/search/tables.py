"""Where a search parameter's index rows are: a search table, or the packed audit index.

Every resource's rows are in ``search_<kind>`` (one row a value), except AuditEvents' written
by the audit trail: theirs are packed, one ``audit_index`` row an event (migration 0025,
docs/storage.md "The audit index"), but for :data:`AUDIT_REAL_PARAMS`, the selective ones,
kept as search table rows so that searching by them stays an index scan. The packed rows
are read with the search tables' columns, so every clause compiles the same way whatever
it reads: a clause on the row at hand from ``audit_rows_<kind>(type, id)`` (two primary-key
lookups a row, :func:`row_source`), a lookup by value from the view ``audit_search_<kind>``
(which scans the trail, :func:`value_source`).

A clause that read ``search_<kind>`` for a packed parameter would miss the trail's events:
every compiler and include query takes its source from here.
"""

from __future__ import annotations

from typing import Final

from psycopg import sql

from healthmesh.store.search.sqlbits import col
from healthmesh.store.statements import Constant

TABLES: Final = {
    "token": "search_token",
    "string": "search_string",
    "date": "search_date",
    "number": "search_number",
    "quantity": "search_quantity",
    "uri": "search_uri",
    "reference": "search_reference",
}
SYSTEM: Final = "Resource"  # the resource_type of clauses in a search across all types
AUDIT_TYPE: Final = "AuditEvent"
# Index param names (as stored in the rows' ``param``) the audit trail writes as search
# table rows: R4 AuditEvent ``patient`` and ``date`` (auditevent.html#search).
AUDIT_REAL_PARAMS: Final = frozenset({"patient", "date"})


def packed_for(resource_type: str, index_param: str | None) -> bool:
    """Whether rows of ``index_param`` (None: any parameter) of ``resource_type`` (or of any
    type, for :data:`SYSTEM`) may be in the packed audit index."""
    if index_param is not None and index_param in AUDIT_REAL_PARAMS:
        return False
    return resource_type in (AUDIT_TYPE, SYSTEM)


def row_source(
    table: str, resource_type: str, index_param: str | None, r: sql.Identifier
) -> sql.Composable:
    """The FROM item giving row ``r``'s index rows that would be in ``table`` (a
    :data:`TABLES` value), for ``EXISTS (SELECT 1 FROM <this> i WHERE i.res_id = r.id …)``."""
    if not packed_for(resource_type, index_param):
        return sql.Identifier(table)
    kind = table.removeprefix("search_")
    row_type = Constant(AUDIT_TYPE) if resource_type == AUDIT_TYPE else col(r, "res_type")
    return sql.SQL("{}({}, {})").format(
        sql.Identifier(f"audit_rows_{kind}"), row_type, col(r, "id")
    )


def value_source(table: str, resource_type: str, index_param: str | None) -> str:
    """The table or view to look ``resource_type``'s rows up by value in."""
    if resource_type == AUDIT_TYPE and packed_for(resource_type, index_param):
        return f"audit_{table}"
    return table


def packed(index_param: str) -> bool:
    """Whether the audit trail writes an AuditEvent's rows of ``index_param`` packed."""
    return index_param not in AUDIT_REAL_PARAMS
