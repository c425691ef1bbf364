"""From an access grant to the rows its holder may touch (store/access.py's Visibility).

- ``patient/`` scopes reach the launch patient's compartment (rows whose compartment key is
  that patient) and reference data no patient owns; without a patient in the grant they
  reach nothing.
- ``user/`` scopes reach what the user may see: a patient user (fhirUser ``Patient/x``) their
  own compartment, as ``patient/`` would; any other user everything the scope names (this
  node has no per-practitioner access lists; consent narrows it further).
- ``system/`` scopes reach everything the scope names (backend services, trusted clients).
- A granular scope's query narrows its rule to the resources matching that search.

Rules of several scopes add up (a row is allowed if any rule allows it), as SMART says.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.scopes import ResourceScope, resource_scopes
from healthmesh.fhir.consent import SCOPE_SYSTEM
from healthmesh.fhir.errors import FhirError
from healthmesh.fhir.search.query import UnknownParameter, parse_clause
from healthmesh.fhir.structure import resource_types
from healthmesh.store.access import PERMISSIONS, ConsentContext, RowRule, Visibility

SYSTEM_TYPE = "Resource"  # the search layer's name for "any type"


def _patient_of(grant: AccessGrant, scope: ResourceScope) -> tuple[bool, str | None]:
    """(usable, patient restriction) for one scope of this grant."""
    if scope.context == "patient":
        return grant.patient is not None, grant.patient
    if scope.context == "user":
        user = grant.fhir_user or ""
        if user.startswith("Patient/"):
            return True, user.removeprefix("Patient/")
        return True, None
    return True, None


def _rule(grant: AccessGrant, scope: ResourceScope) -> RowRule | None:
    usable, patient = _patient_of(grant, scope)
    if not usable:
        return None
    res_type = None if scope.res_type == "*" else scope.res_type
    clauses = []
    for name, value in scope.query:
        try:
            clauses.append(parse_clause(res_type or SYSTEM_TYPE, name, value))
        except (UnknownParameter, FhirError):
            # A criterion this server cannot evaluate must not widen the scope: the scope
            # grants nothing rather than more than it says.
            return None
    return RowRule(res_type=res_type, patient=patient, clauses=tuple(clauses))


def consent_context(grant: AccessGrant, *, default_permit: bool = True) -> ConsentContext:
    """Who this access is, for the patients' Consents: the app, its organization, the user."""
    actors = [f"client:{grant.client_id}"]
    if grant.organization:
        actors.append(f"organization:{grant.organization}")
    user = grant.fhir_user or ""
    patient = grant.patient
    if patient is None and user.startswith("Patient/"):
        patient = user.removeprefix("Patient/")
    if user and user != f"Patient/{patient}":
        # Someone other than the patient is the user — a practitioner's app launched with
        # the patient in context (SMART launch/patient), a caregiver: they are a recipient
        # like any other, not the patient seeing their own record (docs/privacy.md).
        actors.append(user)
        patient = None
    return ConsentContext(
        actors=tuple(actors),
        purpose=grant.purpose_of_use,
        patient=patient,
        default_permit=default_permit,
    )


# Only the patient (through their compartment) or an operator with system/ scopes writes a
# patient's privacy Consent (docs/privacy.md): a practitioner's user/ scopes write other
# Consents, never one deciding who sees a patient's record — that would let a recipient
# grant itself access. As a granular criterion, the check is compiled into the write's SQL.
_NOT_PRIVACY = parse_clause("Consent", "scope:not", f"{SCOPE_SYSTEM}|patient-privacy")
_WRITES = frozenset("cud")


def _someone_elses_user(grant: AccessGrant, scope: ResourceScope) -> bool:
    return scope.context == "user" and not (grant.fhir_user or "").startswith("Patient/")


def _write_rules(rule: RowRule) -> list[RowRule]:
    """``rule`` for writes by a user who is not the patient: privacy Consents left out."""
    if rule.res_type == "Consent":
        return [replace(rule, clauses=(*rule.clauses, _NOT_PRIVACY))]
    if rule.res_type is not None:
        return [rule]
    others = [replace(rule, res_type=t) for t in sorted(resource_types()) if t != "Consent"]
    return [*others, replace(rule, res_type="Consent", clauses=(*rule.clauses, _NOT_PRIVACY))]


def visibility_for(grant: AccessGrant, *, consent_default_permit: bool = True) -> Visibility:
    """The rows ``grant`` lets its holder touch, per SMART permission letter, subject to the
    patients' Consents (store/consent_sql.py).

    A pure function of what the grant says (not of which token carries it, nor of the
    database): built once and kept, since an app sends the same grant on every request and
    parsing its scopes and their query criteria is a fixed cost of each (docs/PERFORMANCE.md).
    """
    return _visibility(
        replace(grant, token_id="", grant_id="", expires_at=0), consent_default_permit
    )


@lru_cache(maxsize=4096)
def _visibility(grant: AccessGrant, consent_default_permit: bool) -> Visibility:
    rules: dict[str, list[RowRule]] = {p: [] for p in PERMISSIONS}
    for scope in resource_scopes(grant.scope):
        rule = _rule(grant, scope)
        if rule is None:
            continue
        for permission in scope.permissions:
            if permission in _WRITES and _someone_elses_user(grant, scope):
                rules[permission].extend(_write_rules(rule))
            else:
                rules[permission].append(rule)
    return Visibility(
        {p: tuple(r) for p, r in rules.items() if r},
        consent=consent_context(grant, default_permit=consent_default_permit),
    )
