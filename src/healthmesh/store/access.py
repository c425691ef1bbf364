"""Who may see which rows, as SQL: the one enforcement point for scopes (and, later, consent).

A :class:`Visibility` lists, per permission (SMART v2 letters ``c r u d s``), the
:class:`RowRule` s under which a row may be touched. It compiles to a condition on a resource
row alias that every query returning or changing resources carries in its own WHERE clause —
search, chains, ``_has``, includes, read, vread, history, ``$everything``, conditional
matching and writes — so paging, totals and counts never see a row the caller may not
(docs/security.md, "Enforcement").

``None`` where a Visibility is expected means unrestricted: ``--open`` and internal jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from psycopg import sql

from healthmesh.fhir.definitions import patient_compartment
from healthmesh.fhir.search.query import Clause
from healthmesh.fhir.structure import resource_types
from healthmesh.store.search.sqlbits import FALSE, TRUE, all_of, any_of

if TYPE_CHECKING:
    from healthmesh.store.search.compiler import Compiler

# The audit trail is not subject to Consent (see Visibility.condition).
CONSENT_EXEMPT = frozenset({"AuditEvent"})
PERMISSIONS = (
    "cruds"  # SMART App Launch 2.2 scopes-and-launch-context: create read update delete search
)


@cache
def compartment_types() -> frozenset[str]:
    """Types whose rows can belong to a patient (R4 Patient CompartmentDefinition)."""
    return frozenset(t for t, params in patient_compartment().items() if params)


@cache
def shared_types() -> tuple[str, ...]:
    """Types no patient owns (Organization, Practitioner, Medication …): reference data."""
    return tuple(sorted(set(resource_types()) - compartment_types()))


@dataclass(frozen=True, slots=True, kw_only=True)
class RowRule:
    """One way a row may be touched.

    ``res_type`` None: any type. ``patient``: only rows whose compartment key is this patient;
    rows of types outside the Patient compartment (reference data) are exempt, since no
    patient owns them. ``clauses``: a granular scope's search criteria
    (``patient/Observation.rs?category=…|laboratory``), parsed for ``res_type``.
    """

    res_type: str | None = None
    patient: str | None = None
    clauses: tuple[Clause, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentContext:
    """Who asks and why, for the patients' Consents (fhir/consent.py, docs/privacy.md).

    ``actors``: ``client:<id>``, ``organization:<id>``, ``Practitioner/<id>`` … of this access.
    ``patient``: the patient on whose behalf the access is made (a patient-context token): on
    that patient's own rows only Consent rules naming an actor of this access apply, and
    neither the network default nor the sensitive-data default does — patients always see
    their own data, through the app they chose, unless they have denied that app.
    ``default_permit``: the deployment's participation default (True: opt-out model).
    ``rules``: what this request found in ``consent_rule`` before compiling its queries
    (store/consent_sql.py, ``settle``): ``MAY_APPLY`` (not looked up: the default, and always
    safe: the full condition), ``APPLY`` (looked up, some rule may apply: the full condition),
    ``NONE_FOR_OWN`` (no rule applies to the patient's own rows for this access, and the
    scopes reach no other patient's rows) or ``NONE`` (no rule at all applies to this access:
    only the deployment default and the sensitive-data default remain).
    """

    actors: tuple[str, ...]
    purpose: str | None = None
    patient: str | None = None
    default_permit: bool = True
    rules: str = "may-apply"


# ConsentContext.rules
MAY_APPLY, APPLY, NONE_FOR_OWN, NONE = "may-apply", "apply", "none-for-own", "none"


@dataclass(frozen=True, slots=True)
class Visibility:
    """The rules by permission letter; a permission without rules allows nothing.

    ``consent``: when set, rows that belong to a patient are further subject to that patient's
    Consents and the sensitive-data policy for reading and searching (store/consent_sql.py).
    """

    rules: Mapping[str, Sequence[RowRule]] = field(default_factory=dict)
    consent: ConsentContext | None = None

    def own_rows_only(self) -> bool:
        """Whether reading and searching reach no patient's rows but the consent context's
        own patient's (and reference data no patient owns): every read and search rule is
        restricted to that patient."""
        patient = self.consent.patient if self.consent is not None else None
        rules = [rule for p in "rs" for rule in self.rules.get(p, ())]
        return patient is not None and all(rule.patient == patient for rule in rules)

    def covers(self, res_type: str, permission: str) -> bool:
        """Whether any rule could allow ``permission`` on some row of ``res_type``."""
        return any(rule.res_type in (None, res_type) for rule in self.rules.get(permission, ()))

    def reaches_every(self, res_type: str, permission: str) -> bool:
        """Whether some rule allows ``permission`` on every row of ``res_type``: a rule for
        the type (or all types) with no criteria, and no compartment restriction that binds
        the type (reference data no patient owns is exempt from one)."""
        return any(
            rule.res_type in (None, res_type)
            and not rule.clauses
            and (rule.patient is None or res_type not in compartment_types())
            for rule in self.rules.get(permission, ())
        )

    def types_covered(self, permission: str) -> frozenset[str] | None:
        """The types some rule names; None when a rule covers every type."""
        named: set[str] = set()
        for rule in self.rules.get(permission, ()):
            if rule.res_type is None:
                return None
            named.add(rule.res_type)
        return frozenset(named)

    def condition(
        self,
        permission: str,
        r: sql.Identifier,
        *,
        res_type: str | None,
        compiler: Compiler | None = None,
    ) -> sql.Composable:
        """The SQL condition that row ``r`` may be touched with ``permission``.

        ``res_type`` is the row's type when the query fixes it (a type-level search, a read),
        None when it comes from the row (system search, includes, history).
        """
        options: list[sql.Composable] = []
        exempt: list[sql.Composable] = []  # rules naming the audit trail's type itself
        for rule in self.rules.get(permission, ()):
            if res_type is not None and rule.res_type not in (None, res_type):
                continue
            row_type = res_type if res_type is not None else rule.res_type
            parts: list[sql.Composable] = []
            if res_type is None and rule.res_type is not None:
                parts.append(sql.SQL("{}.res_type = {}").format(r, sql.Literal(rule.res_type)))
            if rule.patient is not None:
                named = compiler is not None and compiler.names(r, rule.patient)
                parts.append(_owned_by(rule.patient, r, row_type, named=named))
            if rule.clauses:
                if compiler is None:
                    from healthmesh.store.search.compiler import Compiler

                    compiler = Compiler()
                parts.append(compiler.where(rule.clauses, r))
            (exempt if rule.res_type in CONSENT_EXEMPT else options).append(all_of(parts))
        if not options and not exempt:
            return FALSE
        if self.consent is None or permission not in "rs":
            # Consent governs disclosure (read, search); writes answer to the scopes alone.
            return _either([*exempt, *options])
        # The audit trail is exempt for those who were given it by name
        # (``patient/AuditEvent.rs``, ``system/AuditEvent.rs``): who looked at a record must
        # stay visible to those allowed to audit it, whatever the record's owner decided
        # about sharing it. A wildcard (``system/*.rs``) is not an auditor's grant.
        consented: list[sql.Composable] = []
        if options:
            from healthmesh.store.consent_sql import consent_condition

            patient = compiler.named_patient(r) if compiler is not None else None
            parts = [_either(options), consent_condition(self.consent, r, patient)]
            if res_type is None or res_type in CONSENT_EXEMPT:
                parts.append(self._own_trail_only(r, res_type))
            consented.append(all_of(parts))
        return _either([*exempt, *consented])

    def _own_trail_only(self, r: sql.Identifier, res_type: str | None) -> sql.Composable:
        """Under a wildcard, audit events only of the acting patient's own record: they name
        every resource touched, sensitive ones too, so a recipient given ``*`` must not
        learn from them what it may not see (a patient still reads "who looked at my
        record" with ``patient/*.rs``)."""
        assert self.consent is not None
        own = (
            sql.SQL("{}.patient_id = {}").format(r, sql.Literal(self.consent.patient))
            if self.consent.patient is not None
            else FALSE
        )
        if res_type is not None:
            return own
        return any_of(
            [sql.SQL("{}.res_type <> ALL({})").format(r, sql.Literal(sorted(CONSENT_EXEMPT))), own]
        )


def _either(options: list[sql.Composable]) -> sql.Composable:
    return TRUE if any(option is TRUE for option in options) else any_of(options)


def _owned_by(
    patient: str, r: sql.Identifier, res_type: str | None, *, named: bool = False
) -> sql.Composable:
    """Row ``r`` belongs to ``patient`` (or to no patient, by its type).

    ``named``: the query's own clauses already require a reference to that patient
    (``Observation?patient=P`` with P's token). PostgreSQL would multiply the two conditions'
    selectivities as if they were independent, though they select the same rows: the
    estimate falls to one row, and it picks plans that are ruinous for the real hundreds
    (``Observation?patient=P&code=C`` for a common code at 1M resources: a nested loop over
    every row of the code, 0.5-1 s instead of 3 ms; docs/PERFORMANCE.md). So the condition
    is then written as a CASE, which the planner does not estimate (a default 0.5) and can
    only evaluate on each row: the same rows pass, the query's own clause drives the plan.
    """
    owner: sql.Composable = sql.SQL("{}.patient_id = {}").format(r, sql.Literal(patient))
    if named:
        owner = sql.SQL("CASE WHEN {} THEN true ELSE false END").format(owner)
    if res_type is None:  # the row's type decides: reference data is exempt
        return sql.SQL("({} OR {}.res_type = ANY({}))").format(
            owner, r, sql.Literal(list(shared_types()))
        )
    return owner if res_type in compartment_types() else TRUE
