"""Patients' Consents as a condition on a resource row (the ``consent_rule`` table, 0013).

For one access (a :class:`ConsentContext`) and one row ``r`` of a patient's record:

- a rule *applies* when its actor, purpose and period match the access and its data scope
  (types, data categories, security labels) matches the row;
- of the rules that apply, the deepest decides; at equal depth deny wins over permit;
- when none applies, the deployment default decides (opt-out model: permit; opt-in: deny);
- a row with a sensitive security label (ETH, PSY, SEX, HIV, GDIS, R, V …) needs an applicable
  permit that names one of its labels, deeper than every applicable deny.

Rows no patient owns (``patient_id IS NULL``) are not subject to Consent. Every piece is a
correlated sub-select on the row, inside the query that returns it (store/access.py), so
totals and paging never count a withheld row.
"""

from __future__ import annotations

from functools import lru_cache

from psycopg import sql

from healthmesh.fhir.consent import ALWAYS_DENIED_PURPOSES, SENSITIVE_LABELS
from healthmesh.store.access import ConsentContext
from healthmesh.store.search.sqlbits import all_of


def _applies(x: str, context: ConsentContext, r: sql.Composable) -> sql.Composable:
    """Rule alias ``x`` applies to this access and to row ``r``.

    On the acting patient's own rows only rules that name an actor of the access apply;
    elsewhere rules without actors (everyone) apply too.
    """
    rule = sql.Identifier(x)
    actors = sql.Literal(list(context.actors))
    if context.patient is None:
        who = sql.SQL("({x}.actors IS NULL OR {x}.actors && {a}::text[])").format(x=rule, a=actors)
    else:
        who = sql.SQL(
            "({x}.actors && {a}::text[] OR ({x}.actors IS NULL AND {r}.patient_id <> {p}))"
        ).format(x=rule, a=actors, r=r, p=sql.Literal(context.patient))
    access = [
        who,
        sql.SQL("({x}.purposes IS NULL OR {p} = ANY({x}.purposes))").format(
            x=rule, p=sql.Literal(context.purpose)
        )
        if context.purpose is not None
        else sql.SQL("{x}.purposes IS NULL").format(x=rule),
        sql.SQL("({x}.period_start IS NULL OR {x}.period_start <= now())").format(x=rule),
        sql.SQL("({x}.period_end IS NULL OR {x}.period_end > now())").format(x=rule),
    ]
    row = [
        sql.SQL("({x}.types IS NULL OR {r}.res_type = ANY({x}.types))").format(x=rule, r=r),
        sql.SQL(
            "({x}.cat_types IS NULL OR {r}.res_type = ANY({x}.cat_types) OR EXISTS (SELECT 1"
            " FROM search_token {c} WHERE {c}.res_type = {r}.res_type AND {c}.res_id = {r}.id"
            " AND {c}.param = 'category' AND {c}.res_type || '|' || {c}.code = ANY({x}.cat_codes)))"
        ).format(x=rule, r=r, c=sql.Identifier(f"{x}c")),
        sql.SQL(
            "({x}.labels IS NULL OR EXISTS (SELECT 1 FROM search_token {l} WHERE"
            " {l}.res_type = {r}.res_type AND {l}.res_id = {r}.id AND {l}.param = '_security'"
            " AND {l}.code = ANY({x}.labels)))"
        ).format(x=rule, r=r, l=sql.Identifier(f"{x}l")),
    ]
    return sql.SQL("{x}.patient_id = {r}.patient_id AND {c}").format(
        x=rule, r=r, c=all_of([*access, *row])
    )


def _undenied_permit(
    context: ConsentContext, r: sql.Composable, *, labelled: bool, suffix: str
) -> sql.Composable:
    """Some applicable permit (naming a label, if ``labelled``) outranks every applicable deny."""
    p, d = f"cp{suffix}", f"cd{suffix}"
    label = (
        sql.SQL(" AND {}.labels IS NOT NULL").format(sql.Identifier(p)) if labelled else sql.SQL("")
    )
    return sql.SQL(
        "EXISTS (SELECT 1 FROM consent_rule {p} WHERE {p}.effect = 'permit'{label} AND {ap}"
        " AND NOT EXISTS (SELECT 1 FROM consent_rule {d} WHERE {d}.effect = 'deny'"
        " AND {d}.depth >= {p}.depth AND {ad}))"
    ).format(
        p=sql.Identifier(p),
        d=sql.Identifier(d),
        label=label,
        ap=_applies(p, context, r),
        ad=_applies(d, context, r),
    )


def consent_condition(context: ConsentContext, r: sql.Identifier) -> sql.Composable:
    """SQL: the patients' Consents let this access touch row ``r``, composed and rendered
    once per (context, alias) and kept: composing it costs ~0.5 ms and rendering the tree
    as much again, on every request of a token (docs/PERFORMANCE.md, "Authorization and
    privacy"). The rendering needs no connection: identifiers and literals (text, text[])
    quote the same for every UTF-8 connection.
    """
    return _rendered(context, r.as_string(None))


@lru_cache(maxsize=4096)
def _rendered(context: ConsentContext, alias: str) -> sql.SQL:
    return sql.SQL(_consent_condition(context, sql.SQL(alias)).as_string(None))


def _consent_condition(context: ConsentContext, r: sql.Composable) -> sql.Composable:
    """SQL: the patients' Consents let this access touch row ``r``.

    Written as a conjunction of NOT EXISTS, without a top-level OR, so that PostgreSQL can plan
    each as an anti-join (a hash over consent_rule, which is small) instead of a probe per row.
    Rows no patient owns never match a rule (``patient_id`` is NULL).
    """
    if context.purpose in ALWAYS_DENIED_PURPOSES:
        return sql.SQL("{}.patient_id IS NULL").format(r)  # no patient data for marketing
    own = sql.Literal(context.patient)
    # 1. No applicable deny that a deeper applicable permit does not override.
    denied = sql.SQL(
        "NOT EXISTS (SELECT 1 FROM consent_rule cd WHERE cd.effect = 'deny' AND {ad}"
        " AND NOT EXISTS (SELECT 1 FROM consent_rule cp WHERE cp.effect = 'permit'"
        " AND cp.depth > cd.depth AND {ap}))"
    ).format(ad=_applies("cd", context, r), ap=_applies("cp", context, r))
    parts: list[sql.Composable] = [denied]
    # 2. Opt-in deployments: someone else's row needs an applicable, undenied permit.
    if not context.default_permit:
        permit = _undenied_permit(context, r, labelled=False, suffix="")
        if context.patient is None:
            parts.append(sql.SQL("({r}.patient_id IS NULL OR {p})").format(r=r, p=permit))
        else:
            parts.append(
                sql.SQL("({r}.patient_id IS NULL OR {r}.patient_id = {o} OR {p})").format(
                    r=r, o=own, p=permit
                )
            )
    # 3. Sensitive rows of someone else's record need a permit that names their label.
    others = (
        sql.SQL(" AND {r}.patient_id <> {o}").format(r=r, o=own)
        if context.patient is not None
        else sql.SQL("")
    )
    parts.append(
        sql.SQL(
            "NOT EXISTS (SELECT 1 FROM search_token cs WHERE cs.res_type = {r}.res_type"
            " AND cs.res_id = {r}.id AND cs.param = '_security' AND cs.code = ANY({labels})"
            " AND {r}.patient_id IS NOT NULL{others} AND NOT {permit})"
        ).format(
            r=r,
            labels=sql.Literal(sorted(SENSITIVE_LABELS)),
            others=others,
            permit=_undenied_permit(context, r, labelled=True, suffix="s"),
        )
    )
    return all_of(parts)
