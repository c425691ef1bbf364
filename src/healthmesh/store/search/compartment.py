"""The Patient compartment as SQL (R4 compartmentdefinition-patient.html).

A resource is in Patient/X's compartment when any of its type's compartment parameters refers
to Patient/X (the Patient itself is in its own). The ``patient_id`` column holds the first
such reference, so it answers most rows through its index; the reference index answers the
rest (an Observation whose performer, not subject, is the patient).
"""

from __future__ import annotations

from psycopg import sql

from healthmesh.fhir.definitions import patient_compartment
from healthmesh.fhir.errors import NotSupported


def _params(res_type: str) -> list[str]:
    return [p for p in patient_compartment().get(res_type, ()) if p != "{def}"]


def member_condition(
    compartment: str, owner: str, res_type: str, r: sql.Identifier
) -> sql.Composable:
    """``r`` (of ``res_type``) is in the ``compartment``/``owner`` compartment."""
    if compartment != "Patient":
        raise NotSupported(
            f"The {compartment} compartment is not supported; the Patient compartment is"
        )
    owner_literal = sql.Literal(owner)
    if res_type == "Patient":
        linked = sql.SQL(
            "EXISTS (SELECT 1 FROM search_reference i WHERE i.res_type = 'Patient' AND i.res_id = {r}.id"
            " AND i.param = 'link' AND i.target_type = 'Patient' AND i.target_id = {o})"
        ).format(r=r, o=owner_literal)
        return sql.SQL("({r}.id = {o} OR {linked})").format(r=r, o=owner_literal, linked=linked)
    params = _params(res_type)
    if not params:
        return sql.SQL("false")
    return sql.SQL(
        "({r}.patient_id = {o} OR EXISTS (SELECT 1 FROM search_reference i WHERE i.res_type = {t}"
        " AND i.res_id = {r}.id AND i.param = ANY({ps}) AND i.target_type = 'Patient' AND i.target_id = {o}))"
    ).format(r=r, o=owner_literal, t=sql.Literal(res_type), ps=sql.Literal(params))


def everything_query(
    owner: str,
    *,
    types: list[str] | None,
    since: sql.Composable | None,
    limit: int | None,
    offset: int = 0,
    visible: sql.Composable | None = None,
    after: sql.Composable | None = None,
    order: sql.Composable | None = None,
) -> sql.Composed:
    """The patient, their compartment, and the non-patient resources those refer to.

        Compartment members come whatever their owner (the definition says so); resources merely
        referred to are added only when they belong to no patient or to this one, so $everything
        for one patient never pulls in another's record through a reference. ``after``: a
        condition on r's (res_type, id) (the paging cursor's); ``order``: (res_type, id) up or
        down (interactions/id_paging.py). ``limit`` None: every row, unordered (for counting
    them; ``order`` and ``offset`` do not apply).
    """
    o = sql.Literal(owner)
    pairs = [(t, p) for t, ps in patient_compartment().items() for p in ps if p != "{def}"]
    conds: list[sql.Composable] = [sql.SQL("NOT r.deleted")]
    if types:
        conds.append(sql.SQL("r.res_type = ANY({})").format(sql.Literal(types)))
    if since is not None:
        conds.append(sql.SQL("r.last_updated >= {}").format(since))
    if visible is not None:  # the caller's access condition on r (store/access.py)
        conds.append(visible)
    if after is not None:
        conds.append(after)
    return sql.SQL(
        "WITH members AS ("
        " SELECT 'Patient'::text AS res_type, {o}::text AS id"
        " UNION SELECT res_type, id FROM resource WHERE patient_id = {o}"
        " UNION SELECT i.res_type, i.res_id FROM search_reference i WHERE i.target_type = 'Patient'"
        " AND i.target_id = {o} AND (i.res_type, i.param) IN (SELECT * FROM unnest({ts}::text[], {ps}::text[]))),"
        " referenced AS (SELECT DISTINCT i.target_type AS res_type, i.target_id AS id FROM search_reference i"
        " WHERE i.patient_id = {o} AND i.target_type IS NOT NULL AND i.target_id IS NOT NULL),"
        " picked AS (SELECT res_type, id FROM members UNION SELECT x.res_type, x.id FROM referenced x"
        " JOIN resource q ON q.res_type = x.res_type AND q.id = x.id WHERE q.patient_id IS NULL OR q.patient_id = {o})"
        " SELECT r.res_type, r.id, r.content FROM picked p JOIN resource r ON r.res_type = p.res_type AND r.id = p.id"
        " WHERE {w}{page}"
    ).format(
        o=o,
        ts=sql.Literal([t for t, _ in pairs]),
        ps=sql.Literal([p for _, p in pairs]),
        w=sql.SQL(" AND ").join(conds),
        page=sql.SQL("")  # counting: every row, in no order
        if limit is None
        else sql.SQL(" ORDER BY {order} LIMIT {n} OFFSET {off}").format(
            order=order if order is not None else sql.SQL("r.res_type, r.id"),
            n=sql.Literal(limit),
            off=sql.Literal(offset),
        ),
    )
