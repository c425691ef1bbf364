"""Patients' Consents as a condition on a resource row (the ``consent_rule`` table, 0013).

For one access (a :class:`ConsentContext`) and one row ``r`` of a patient's record:

- a rule *applies* when its actor, purpose and period match the access and its data scope
  (types, data categories, security labels) matches the row;
- of the rules that apply, the deepest decides; at equal depth deny wins over permit;
- when none applies, the deployment default decides (opt-out model: permit; opt-in: deny);
- a row with a sensitive security label (ETH, PSY, SEX, HIV, GDIS, R, V …) needs an applicable
  permit that names one of its labels, deeper than every applicable deny.

Rows no patient owns (``patient_id IS NULL``) are not subject to Consent. The condition is
part of the query that returns the row (store/access.py), so totals and paging never count a
withheld row: rows of patients no rule applies to get the defaults only (the sensitive-label
default a probe of the row's labels); the ruled patients' rows get the full decision, the
function ``consent_decides`` (migrations 0024, 0026, 0028, 0031), which settles a row a deny
withholds by its type alone from the patient's rules, and otherwise looks the row's category
and label codes up once and compares the applicable rules' depths. A search that names its
patient reads that patient's rules once per query, not once per row (0031).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from healthmesh.fhir.consent import ALWAYS_DENIED_PURPOSES, SENSITIVE_LABELS
from healthmesh.store.access import (
    APPLY,
    MAY_APPLY,
    NONE,
    NONE_FOR_OWN,
    ConsentContext,
    Visibility,
)
from healthmesh.store.search.sqlbits import FALSE, all_of
from healthmesh.store.statements import KEY, Bound, bind_parts, placeholder_segments


def _access(
    x: str, context: ConsentContext, patient_of_row: sql.Composable, *, bound: bool = False
) -> list[sql.Composable]:
    """Rule alias ``x`` applies to this access (who, why, when), on a row of the patient
    ``patient_of_row``. ``bound``: the context's values as the placeholders of
    ``probe_params`` rather than literals.

    On the acting patient's own rows only rules that name an actor of the access apply;
    elsewhere rules without actors (everyone) apply too.
    """
    rule = sql.Identifier(x)
    actors: sql.Composable = sql.Placeholder("consent_actors")
    patient: sql.Composable = sql.Placeholder("consent_patient")
    purpose: sql.Composable = sql.Placeholder("consent_purpose")
    if not bound:
        actors = sql.Literal(list(context.actors))
        patient, purpose = sql.Literal(context.patient), sql.Literal(context.purpose)
    if context.patient is None:
        who = sql.SQL("({x}.actors IS NULL OR {x}.actors && {a}::text[])").format(x=rule, a=actors)
    else:
        who = sql.SQL("({x}.actors && {a}::text[] OR ({x}.actors IS NULL AND {r} <> {p}))").format(
            x=rule, a=actors, r=patient_of_row, p=patient
        )
    return [
        who,
        sql.SQL("({x}.purposes IS NULL OR {p} = ANY({x}.purposes))").format(x=rule, p=purpose)
        if context.purpose is not None
        else sql.SQL("{x}.purposes IS NULL").format(x=rule),
        sql.SQL("({x}.period_start IS NULL OR {x}.period_start <= now())").format(x=rule),
        sql.SQL("({x}.period_end IS NULL OR {x}.period_end > now())").format(x=rule),
    ]


# The sensitive labels are the same for every access: written into the text, never bound.
_SENSITIVE = sql.SQL(
    sql.SQL("{}::text[]").format(sql.Literal(sorted(SENSITIVE_LABELS))).as_string(None)
)


def _access_values(context: ConsentContext) -> dict[str, sql.Composable]:
    """The access's values as the SQL functions take them (``{actors}::text[]``,
    ``{purpose}::text``, ``{patient}::text``): ``consent_decides`` and
    ``consent_rule_applies`` (migrations 0028, 0029)."""
    return {
        "actors": sql.Literal(list(context.actors)),
        "purpose": sql.Literal(context.purpose),
        "patient": sql.Literal(context.patient),
    }


def _decides(context: ConsentContext, r: sql.Composable) -> sql.Composable:
    """The full decision on row ``r`` of a patient some rule may apply to (migration 0024,
    ``consent_decides``: the applicable rules' deepest deny, permit and labelled permit)."""
    return sql.SQL(
        "consent_decides({r}.res_type, {r}.id, {r}.patient_id, {actors}::text[],"
        " {purpose}::text, {patient}::text, {opt_out}, {labels})"
    ).format(
        r=r,
        opt_out=sql.Literal(context.default_permit),
        labels=_SENSITIVE,
        **_access_values(context),
    )


def consent_condition(
    context: ConsentContext, r: sql.Identifier, named_patient: str | None = None
) -> sql.Composable:
    """SQL: the patients' Consents let this access touch row ``r``, composed and bound once
    per (context, alias) and kept: composing it costs ~0.5 ms and rendering the tree as
    much again, on every request of a token (docs/PERFORMANCE.md, "Authorization and
    privacy"). The binding needs no connection: identifiers quote the same for every UTF-8
    connection, and the access's values (actors, purpose, patient) are parameters.

    Parameters, not literals in the text: with the patient written into it, every patient's
    statements were texts of their own, which psycopg never prepares (five executions of a
    text on one connection) and PostgreSQL parses and plans anew on each request, keyed
    statements included: at 1M resources, a third more per request than the same search
    without Consents (docs/PERFORMANCE.md, "Consent filters at 1M resources"). Bound, a
    patient's statements share their text with everyone's, as without Consents. They are
    bound as keys (store/statements.py): no plan could suit one access's values and not
    another's, since they are compared inside a CASE, which the planner does not estimate,
    in ``consent_rule``'s sub-selects, and in the functions of migration 0024 — so a search
    keyed by identifier or id keeps its one generic plan under Consents too.

    ``named_patient``: the one patient the caller's own clauses name on ``r``
    (``Observation?patient=P``, store/search/compiler.py ``named_patient``), whose rows are
    then decided from that patient's rules read once per query. Only a hint: the condition
    is the same on every row whatever it names, since the shortcut is taken on the rows whose
    ``patient_id`` is that patient and no other. The patient is a parameter of the kept text,
    so every patient's searches share one text (and one plan).
    """
    bound, slots = _rendered(context, r.as_string(None), named_patient is not None)
    if not slots:
        return bound
    params = list(bound.params)
    for n in slots:
        params[n] = named_patient
    return Bound(bound._obj, params, bound.kinds, bound.segments)


# Where the named patient goes in a kept condition: the parameters that are this very
# object (made at import, so no other value is it, whatever its text).
_NAMED = "".join(("named ", "patient"))


@lru_cache(maxsize=4096)
def _rendered(context: ConsentContext, alias: str, named: bool) -> tuple[Bound, tuple[int, ...]]:
    """The condition bound, and which of its parameters are the named patient."""
    patient = sql.Literal(_NAMED) if named else None
    parts = bind_parts(_consent_condition(context, sql.SQL(alias), patient))
    text = b"".join(parts.text)
    kinds = tuple(KEY for _ in parts.params)
    slots = tuple(n for n, value in enumerate(parts.params) if value is _NAMED)
    return Bound(text, parts.params, kinds, placeholder_segments(text)), slots


def _consent_condition(
    context: ConsentContext, r: sql.Composable, named: sql.Composable | None = None
) -> sql.Composable:
    """SQL: the patients' Consents let this access touch row ``r``.

    Rows no patient owns never match a rule (``patient_id`` is NULL). Planning the decision
    was most of its cost when it was written inline as correlated sub-selects (one per rule
    role and data dimension: 1-2 ms per query, where a search's own statement plans in
    0.1-1 ms); the per-row parts are now functions whose inner plans PostgreSQL keeps
    (migration 0024), called inside this query (docs/PERFORMANCE.md, "System token under
    Consents").
    """
    if context.purpose in ALWAYS_DENIED_PURPOSES:
        return sql.SQL("{}.patient_id IS NULL").format(r)  # no patient data for marketing
    own = sql.Literal(context.patient)
    if context.rules == NONE_FOR_OWN:
        # No rule applies to the patient's own rows, and the scopes reach no one else's: the
        # full condition below is true on exactly these rows (``settle``). A CASE, so that
        # the planner does not count it again: the scopes' own condition already restricts
        # the rows to the patient (store/access.py ``_owned_by``).
        return sql.SQL(
            "CASE WHEN {r}.patient_id IS NULL OR {r}.patient_id = {o} THEN true ELSE false END"
        ).format(r=r, o=own)
    if context.rules == NONE:
        return _defaults_only(context, r)
    # The row's patient is one some rule may apply to for this access (actors, purpose,
    # period): its rows get the full decision, the others the defaults only — the patient's
    # own rows and, in the opt-out model, the rows without a sensitive label. Correlated on
    # the row's patient, so that PostgreSQL chooses, by the rows it expects, between probing
    # ``consent_rule_patient`` per row and hashing every such patient once per query (its
    # alternative sub-plans). Written uncorrelated, it was always the hash: a scan of all of
    # ``consent_rule`` on every query, ~0.4 ms at 1M resources (2,431 rules) even for
    # ``Patient?_id``, growing with the patients who wrote a Consent (docs/PERFORMANCE.md,
    # "Consent filters at 1M resources").
    # The rule's access test is one call (migration 0029), which PostgreSQL does not estimate
    # when it plans; it runs only on the rules the index probe finds.
    ruled = sql.SQL(
        "EXISTS (SELECT 1 FROM consent_rule cxp WHERE cxp.patient_id = {r}.patient_id"
        " AND consent_rule_applies(cxp.actors, cxp.purposes, cxp.period_start, cxp.period_end,"
        " cxp.patient_id, {actors}::text[], {purpose}::text, {patient}::text))"
    ).format(r=r, **_access_values(context))
    # In the order written (a CASE's order is kept): rows no patient owns; rows of patients
    # no rule applies to, which get the defaults (index probes: the patient's rules, then, in
    # the opt-out model, the row's labels); and the full decision, a function call (~10-30 µs
    # a row: docs/PERFORMANCE.md, "Consent at 1M").
    decision = sql.SQL(
        "CASE WHEN {r}.patient_id IS NULL THEN true {named} WHEN NOT {ruled} THEN {defaults}"
        " ELSE {decides} END"
    ).format(
        r=r,
        named=_named_patients_rows(context, r, named) if named is not None else sql.SQL(""),
        ruled=ruled,
        defaults=_defaults(context, r),
        decides=_decides(context, r),
    )
    # A NOT EXISTS over one constant row, so that PostgreSQL plans the condition as an
    # anti-join, which it places after the query's own joins (the function's COST says it
    # is dear): it runs on the rows the query returns, not on every row an index scan
    # passes through (``Observation?patient=P&code=C`` scans the code's rows of every patient).
    return sql.SQL("NOT EXISTS (SELECT 1 FROM (VALUES (true)) cv(x) WHERE NOT {})").format(decision)


def _named_patients_rows(
    context: ConsentContext, r: sql.Composable, patient: sql.Composable
) -> sql.Composable:
    """The CASE's branch for the rows of the patient the caller's clauses name (migration
    0031): that patient's applicable rules are an uncorrelated sub-select, which PostgreSQL
    evaluates once per query (an InitPlan, written twice and so asked twice), not the two
    index probes per row of ``ruled`` and ``consent_decides``. No rule: the defaults, as for
    any patient no rule applies to — their label probe asked only if the patient has a
    labelled row at all; otherwise the decision from those rules."""
    rules = sql.SQL(
        "(SELECT consent_rules_applying({p}::text, {actors}::text[], {purpose}::text,"
        " {patient}::text))"
    ).format(p=patient, **_access_values(context))
    # The label probe of the defaults, asked only if the patient has a labelled row at all
    # (migration 0032): uncorrelated, an InitPlan too, run once and only if a row reaches it.
    has_labels = sql.SQL(
        "EXISTS (SELECT 1 FROM search_token cx_plabel WHERE cx_plabel.param = '_security'"
        " AND cx_plabel.patient_id = {p}::text AND cx_plabel.code = ANY(consent_labels({labels})))"
    ).format(p=patient, labels=_SENSITIVE)
    labelled = sql.SQL("CASE WHEN {has} THEN {probe} ELSE false END").format(
        has=has_labels, probe=_labelled(r)
    )
    return sql.SQL(
        "WHEN {r}.patient_id = {p}::text THEN CASE WHEN cardinality({rules}) = 0 THEN {defaults}"
        " ELSE consent_decides_among({rules}, {r}.res_type, {r}.id, {r}.patient_id,"
        " {patient}::text, {opt_out}, {labels}) END"
    ).format(
        r=r,
        p=patient,
        rules=rules,
        defaults=_defaults(context, r, labelled),
        patient=sql.Literal(context.patient),
        opt_out=sql.Literal(context.default_permit),
        labels=_SENSITIVE,
    )


def _defaults(
    context: ConsentContext, r: sql.Composable, labelled: sql.Composable | None = None
) -> sql.Composable:
    """SQL: the deployment's defaults let this access touch row ``r`` of a patient no rule
    applies to: the patient's own rows; in the opt-out model also everyone else's rows
    without a sensitive label (the sensitive-data default), in the opt-in model none.

    The label test is a sub-select of the CASE, asked only of the rows it reaches. As an
    anti-join of its own beside the CASE (which then had to ask ``ruled`` a second time, to
    leave ruled patients' labelled rows to the full decision) it cost PostgreSQL ~0.3 ms
    more to plan per statement than it saved in running (docs/PERFORMANCE.md, "Consent
    planning"). ``labelled``: the label test, when not the probe of ``_labelled``.
    """
    own = (
        sql.SQL("{r}.patient_id = {o}").format(r=r, o=sql.Literal(context.patient))
        if context.patient is not None
        else None
    )
    if not context.default_permit:
        return own if own is not None else FALSE
    unlabelled = sql.SQL("NOT {}").format(labelled if labelled is not None else _labelled(r))
    return unlabelled if own is None else sql.SQL("({} OR {})").format(own, unlabelled)


def _labelled(r: sql.Composable) -> sql.Composable:
    """SQL: row ``r`` carries a sensitive security label. The labels go through
    ``consent_labels`` (migration 0027), an identity function PostgreSQL does not look
    into: estimating ``code = ANY`` of the literal list against search_token's statistics
    was a fifth of what the consent condition cost to plan, and the estimate decides
    nothing here (the test is a probe of one row's index entries)."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM search_token cx_label"
        " WHERE cx_label.res_type = {r}.res_type AND cx_label.res_id = {r}.id"
        " AND cx_label.param = '_security' AND cx_label.code = ANY(consent_labels({labels})))"
    ).format(r=r, labels=_SENSITIVE)


def _defaults_only(context: ConsentContext, r: sql.Composable) -> sql.Composable:
    """The full condition when no rule in ``consent_rule`` applies to this access: no deny to
    honour and no permit to find, so what remains is the deployment default (opt-in: nobody
    else's rows) and the sensitive-data default (nobody else's labelled rows) — the CASE's
    defaults, on every row a patient owns."""
    return sql.SQL("({r}.patient_id IS NULL OR {defaults})").format(
        r=r, defaults=_defaults(context, r)
    )


def _probe(context: ConsentContext, *, own_only: bool) -> sql.Composable:
    """SQL: some rule in ``consent_rule`` could apply to this access — for ``own_only``, on
    the patient's own rows (rules naming an actor of the access), otherwise on any row.
    Row-dependent dimensions (types, categories, labels) are not looked at: a rule that
    might apply counts. The context's values are bound (``probe_params``), so there are a
    handful of texts, which psycopg prepares: PostgreSQL plans each once per connection."""
    x = sql.Identifier("x")
    if own_only:
        who = [
            sql.SQL("x.patient_id = %(consent_patient)s"),
            sql.SQL("x.actors && %(consent_actors)s::text[]"),
            *_access("x", context, sql.SQL("x.patient_id"), bound=True)[1:],
        ]
    else:
        who = _access("x", context, sql.SQL("x.patient_id"), bound=True)
    return sql.SQL("EXISTS (SELECT 1 FROM consent_rule {x} WHERE {c})").format(x=x, c=all_of(who))


def probe_params(context: ConsentContext) -> dict[str, object]:
    return {
        "consent_actors": list(context.actors),
        "consent_patient": context.patient,
        "consent_purpose": context.purpose,
    }


def probe(visibility: Visibility | None) -> tuple[str, dict[str, object]] | None:
    """The question ``settle`` asks of ``consent_rule`` for this access (a scalar sub-select
    and its parameters), for asking it along with another statement; None: nothing to ask."""
    if visibility is None or visibility.consent is None:
        return None
    context = visibility.consent
    if context.rules != MAY_APPLY or context.purpose in ALWAYS_DENIED_PURPOSES:
        return None
    text = _probe_text(
        visibility.own_rows_only(), context.patient is not None, context.purpose is not None
    )
    return text.as_string(None), probe_params(context)


def settled(visibility: Visibility, rule_may_apply: bool) -> Visibility:
    """``visibility`` once ``probe(visibility)`` has been answered (``rule_may_apply``)."""
    context = visibility.consent
    assert context is not None
    own = visibility.own_rows_only()
    rules = APPLY if rule_may_apply else NONE_FOR_OWN if own else NONE
    return replace(visibility, consent=replace(context, rules=rules))


async def settle(
    conn: AsyncConnection[TupleRow], visibility: Visibility | None
) -> Visibility | None:
    """``visibility`` with what ``consent_rule`` holds for this access looked up now.

    Planning the full condition (correlated NOT EXISTS over ``consent_rule`` and the label
    index) costs PostgreSQL ~1.5 ms per query, more than running the search
    (docs/PERFORMANCE.md, "Authorization and privacy"). Most accesses meet no rule at all: one
    index probe of ``consent_rule`` finds that out, and the queries then carry the simpler,
    equivalent condition. Looked up on every request, never cached, so a Consent written by
    any process binds the very next request. Only for read-only sessions: a write session
    could write a Consent and then read under it. The FHIR API asks the same question in the
    statement that checks the token (api/app.py), so its sessions find it answered.
    """
    question = probe(visibility)
    if question is None or visibility is None:
        return visibility
    cur = await conn.execute(f"SELECT {question[0]}", question[1])
    row = await cur.fetchone()
    return settled(visibility, row is None or bool(row[0]))


@lru_cache(maxsize=8)
def _probe_text(own_only: bool, patient: bool, purpose: bool) -> sql.SQL:
    """The probe's text depends only on which values the context has, not on what they are."""
    shape = ConsentContext(
        actors=(), patient="" if patient else None, purpose="" if purpose else None
    )
    return sql.SQL(_probe(shape, own_only=own_only).as_string(None))
