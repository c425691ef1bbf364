"""The SQL that reads what a patient summary is chosen from (share/ips.py ``read_record``).

``$everything``'s query (compartment.py) gathers the whole compartment — every type, every
compartment parameter, every reference of the patient's resources — and filters by type only
after the join: for a 2,000-resource Synthea record that is ~4,000 candidate keys for ~1,500
rows kept. A summary needs much less, and says so in the SQL:

- resources of the summary's ``types`` that are *about* the patient — owned by them
  (``patient_id``, the first subject/patient reference, docs/storage.md) or naming them in
  ``subject``, ``patient`` or ``beneficiary`` (the reference index; e.g. a child's Coverage
  held by a parent is owned by the parent) — the only ones share/ips.py ever lists;
- the reference data of ``reference_types`` those point at, when no other patient owns it.

The caller's access condition (``visible``, store/access.py: scopes, consent, labels) is one
more condition on the same statement, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

# Elements naming whom a resource is about (share/ips.py _ABOUT), as search parameters.
ABOUT_PARAMS = ("subject", "patient", "beneficiary")


def summary_record_query(
    owner: str,
    *,
    types: Sequence[str],
    reference_types: Sequence[str],
    limit: int,
    visible: sql.Composable | None = None,
) -> sql.Composed:
    """``(res_type, id, content)`` of the rows a summary of ``owner`` may use, in key order."""
    o = sql.Literal(owner)
    conds: list[sql.Composable] = [sql.SQL("NOT r.deleted")]
    if visible is not None:
        conds.append(visible)
    return sql.SQL(
        "WITH about AS ("
        " SELECT q.res_type, q.id FROM resource q"
        " WHERE q.patient_id = {o} AND q.res_type = ANY({ts})"
        " UNION SELECT i.res_type, i.res_id FROM search_reference i"
        " WHERE i.target_type = 'Patient' AND i.target_id = {o} AND i.res_type = ANY({ts})"
        " AND i.param = ANY({about})),"
        " referenced AS (SELECT DISTINCT i.target_type AS res_type, i.target_id AS id"
        " FROM search_reference i WHERE i.patient_id = {o} AND i.target_type = ANY({rts})"
        " AND i.target_id IS NOT NULL),"
        " picked AS (SELECT res_type, id FROM about UNION SELECT x.res_type, x.id FROM referenced x"
        " JOIN resource q ON q.res_type = x.res_type AND q.id = x.id"
        " WHERE q.patient_id IS NULL OR q.patient_id = {o})"
        " SELECT r.res_type, r.id, r.content FROM picked p"
        " JOIN resource r ON r.res_type = p.res_type AND r.id = p.id"
        " WHERE {w} ORDER BY r.res_type, r.id LIMIT {n}"
    ).format(
        o=o,
        ts=sql.Literal(list(types)),
        rts=sql.Literal(list(reference_types)),
        about=sql.Literal(list(ABOUT_PARAMS)),
        w=sql.SQL(" AND ").join(conds),
        n=sql.Literal(limit),
    )
