"""Matching an identity to exactly one local Patient (SPECS.md §4, CMS Patient Matching
proposal draft v3.3.0).

A match needs a **rule** — a combination of fields that must all agree — and **exactly one**
candidate satisfying some rule; zero or several candidates are a refusal, never a guess.
Per the proposal: fuzzy agreement (Damerau–Levenshtein ≤ 1) only on first name, last name and
street line, only for strings of at least 5 characters, at most one fuzzy field per rule;
DOB ±1 day only where a rule says so; a name-suffix mismatch vetoes a candidate; placeholder
values count as absent (normalize.py). All historical names and addresses count.

Pure: candidates come in as FHIR Patient resources (the store layer finds them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from healthmesh.auth.identity import normalize
from healthmesh.auth.identity.claims import IdentityClaims

log = logging.getLogger("healthmesh.identity.matching")

FIRST, LAST, DOB, STREET, SSN4, PHONE, EMAIL, MBI = (
    "first", "last", "dob", "street", "ssn4", "phone", "email", "mbi",
)  # fmt: skip
FUZZY_FIELDS = frozenset({FIRST, LAST, STREET})
FUZZY_MIN_LENGTH = 5
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
MBI_SYSTEM = "http://hl7.org/fhir/sid/us-mbi"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    fields: tuple[str, ...]
    dob_tolerance_days: int = 0


# Strongest first. The proposal's examples, plus the other strong identifiers an IAL2
# CSP asserts (a verified phone or e-mail with full name and DOB).
RULES: tuple[Rule, ...] = (
    Rule("first+last+dob+ssn4", (FIRST, LAST, DOB, SSN4)),
    Rule("first+last+dob+street", (FIRST, LAST, DOB, STREET)),
    Rule("first+dob+mbi", (FIRST, DOB, MBI)),
    Rule("first+last+dob+phone", (FIRST, LAST, DOB, PHONE)),
    Rule("first+last+dob+email", (FIRST, LAST, DOB, EMAIL)),
    Rule("first+last+street+ssn4+dob±1", (FIRST, LAST, DOB, STREET, SSN4), dob_tolerance_days=1),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Demographics:
    """Normalised values per field; a field holds every value known (historical included)."""

    first: frozenset[str] = frozenset()
    last: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()
    dob: date | None = None
    street: frozenset[str] = frozenset()
    ssn4: frozenset[str] = frozenset()
    phone: frozenset[str] = frozenset()
    email: frozenset[str] = frozenset()
    mbi: frozenset[str] = frozenset()

    def values(self, name: str) -> frozenset[str]:
        value = getattr(self, name)
        assert isinstance(value, frozenset)
        return value

    def has(self, name: str) -> bool:
        return self.dob is not None if name == DOB else bool(self.values(name))


def _set(values: Iterable[str | None]) -> frozenset[str]:
    return frozenset(v for v in values if v)


def _street_values(lines: Sequence[str]) -> list[str | None]:
    """The first line alone and all lines together: "123 Main St" + "Apt 4" matches either."""
    if not lines:
        return []
    return [normalize.street(lines[0]), normalize.street(" ".join(lines))]


def demographics_of_claims(claims: IdentityClaims) -> Demographics:
    streets: list[str | None] = []
    for address in claims.addresses:
        streets += _street_values(address.lines)
    return Demographics(
        first=_set(normalize.name(n.given) for n in claims.names),
        last=_set(normalize.name(n.family) for n in claims.names),
        suffixes=_set(normalize.suffix(n.suffix) for n in claims.names),
        dob=normalize.birthdate(claims.birthdate),
        street=_set(streets),
        ssn4=_set([normalize.ssn_last4(claims.ssn_last4)]),
        phone=_set(normalize.phone(p) for p in claims.phones),
        email=_set(normalize.email(e) for e in claims.emails),
        mbi=_set([normalize.identifier(claims.medicare_id)]),
    )


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def demographics_of_patient(patient: Mapping[str, Any]) -> Demographics:
    """A FHIR R4 Patient's matching fields: every name and address, old ones included."""
    firsts: list[str | None] = []
    lasts: list[str | None] = []
    suffixes: list[str | None] = []
    for human_name in _dicts(patient.get("name")):
        given = _strings(human_name.get("given"))
        firsts.append(normalize.name(given[0]) if given else None)
        lasts.append(normalize.name(human_name.get("family")) if "family" in human_name else None)
        suffixes += [normalize.suffix(s) for s in _strings(human_name.get("suffix"))]
    streets: list[str | None] = []
    for address in _dicts(patient.get("address")):
        streets += _street_values(_strings(address.get("line")))
    phones: list[str | None] = []
    emails: list[str | None] = []
    for telecom in _dicts(patient.get("telecom")):
        value = telecom.get("value")
        if not isinstance(value, str):
            continue
        if telecom.get("system") in ("phone", "sms"):
            phones.append(normalize.phone(value))
        elif telecom.get("system") == "email":
            emails.append(normalize.email(value))
    ssn4: list[str | None] = []
    mbis: list[str | None] = []
    for ident in _dicts(patient.get("identifier")):
        value = ident.get("value")
        if not isinstance(value, str):
            continue
        if ident.get("system") == SSN_SYSTEM:
            ssn4.append(normalize.ssn_last4(value))
        elif ident.get("system") == MBI_SYSTEM:
            mbis.append(normalize.identifier(value))
    birth = patient.get("birthDate")
    return Demographics(
        first=_set(firsts),
        last=_set(lasts),
        suffixes=_set(suffixes),
        dob=normalize.birthdate(birth) if isinstance(birth, str) else None,
        street=_set(streets),
        ssn4=_set(ssn4),
        phone=_set(phones),
        email=_set(emails),
        mbi=_set(mbis),
    )


def _agree(name: str, ours: frozenset[str], theirs: frozenset[str]) -> str | None:
    """ "exact", "fuzzy" or None for one field."""
    if ours & theirs:
        return "exact"
    if name in FUZZY_FIELDS:
        for a in ours:
            for b in theirs:
                if (
                    min(len(a), len(b)) >= FUZZY_MIN_LENGTH
                    and normalize.damerau_levenshtein(a, b) <= 1
                ):
                    return "fuzzy"
    return None


def _satisfies(rule: Rule, query: Demographics, candidate: Demographics) -> tuple[str, ...] | None:
    """The fuzzy fields used when ``candidate`` satisfies ``rule`` (empty: exact), else None."""
    fuzzy: list[str] = []
    for name in rule.fields:
        if name == DOB:
            if query.dob is None or candidate.dob is None:
                return None
            if abs((query.dob - candidate.dob).days) > rule.dob_tolerance_days:
                return None
            continue
        how = _agree(name, query.values(name), candidate.values(name))
        if how is None:
            return None
        if how == "fuzzy":
            fuzzy.append(name)
            if len(fuzzy) > 1:  # at most one fuzzy field per rule
                return None
    return tuple(fuzzy)


def suffix_vetoes(query: Demographics, candidate: Demographics) -> bool:
    """Jr vs Sr (or II vs III) are different people, whatever else agrees."""
    return bool(query.suffixes and candidate.suffixes and not query.suffixes & candidate.suffixes)


MATCHED = "matched"
NO_MATCH = "no_match"
AMBIGUOUS = "ambiguous"
INSUFFICIENT = "insufficient_demographics"
TOO_MANY = "too_many_candidates"


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchDecision:
    """What matching decided and why: for the caller, and for audit to store.

    ``log_record`` is what goes to the log: rule, exact/fuzzy, counts, outcome — no PHI and
    no ids. ``candidate_ids`` (the Patients that satisfied a rule) are for the audit store.
    """

    outcome: str
    patient_id: str | None = None
    rule: str | None = None
    fuzzy_fields: tuple[str, ...] = ()
    candidate_count: int = 0  # candidates considered (after blocking)
    matched_ids: tuple[str, ...] = ()
    vetoed_count: int = 0
    applicable_rules: tuple[str, ...] = ()
    issuer: str | None = None
    decided_at: float = field(default_factory=time.time)

    @property
    def exact(self) -> bool:
        return not self.fuzzy_fields

    def log_record(self) -> dict[str, object]:
        return {
            "event": "patient_match",
            "outcome": self.outcome,
            "rule": self.rule,
            "match": None if self.rule is None else ("exact" if self.exact else "fuzzy"),
            "fuzzy_fields": list(self.fuzzy_fields),
            "candidates": self.candidate_count,
            "matched": len(self.matched_ids),
            "vetoed": self.vetoed_count,
            "issuer": self.issuer,
        }


def applicable_rules(query: Demographics, rules: Sequence[Rule] = RULES) -> list[Rule]:
    """The rules whose every field the query has: only those can ever match."""
    return [r for r in rules if all(query.has(f) for f in r.fields)]


def decide(
    query: Demographics,
    candidates: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    rules: Sequence[Rule] = RULES,
    issuer: str | None = None,
    truncated: bool = False,
) -> MatchDecision:
    """Match ``query`` against ``(id, Patient)`` candidates; exactly one or refusal.

    ``truncated`` says the blocking query hit its limit: then some candidates are unseen, so
    no decision can claim uniqueness.
    """
    usable = applicable_rules(query, rules)
    names = tuple(r.name for r in usable)
    if not usable:
        return _logged(MatchDecision(outcome=INSUFFICIENT, issuer=issuer, applicable_rules=names))
    pool = list(candidates)
    if truncated:
        return _logged(
            MatchDecision(
                outcome=TOO_MANY, candidate_count=len(pool), issuer=issuer, applicable_rules=names
            )
        )
    matched: list[tuple[str, Rule, tuple[str, ...]]] = []
    vetoed = 0
    for patient_id, resource in pool:
        candidate = demographics_of_patient(resource)
        if suffix_vetoes(query, candidate):
            vetoed += 1
            continue
        best: tuple[Rule, tuple[str, ...]] | None = None
        for rule in usable:
            fuzzy = _satisfies(rule, query, candidate)
            if fuzzy is not None and (best is None or len(fuzzy) < len(best[1])):
                best = (rule, fuzzy)
                if not fuzzy:
                    break
        if best is not None:
            matched.append((patient_id, *best))
    common: dict[str, Any] = {
        "candidate_count": len(pool),
        "matched_ids": tuple(m[0] for m in matched),
        "vetoed_count": vetoed,
        "applicable_rules": names,
        "issuer": issuer,
    }
    if len(matched) == 1:
        patient_id, rule, fuzzy = matched[0]
        decision = MatchDecision(
            outcome=MATCHED, patient_id=patient_id, rule=rule.name, fuzzy_fields=fuzzy, **common
        )
    elif matched:
        decision = MatchDecision(outcome=AMBIGUOUS, **common)
    else:
        decision = MatchDecision(outcome=NO_MATCH, **common)
    return _logged(decision)


def _logged(decision: MatchDecision) -> MatchDecision:
    record = decision.log_record()
    # One JSON line for plain log files; the same record in `extra` for structured handlers.
    log.info(
        "patient match decision %s",
        json.dumps(record, sort_keys=True),
        extra={"identity_match": record},
    )
    return decision


def birthdate_window(
    query: Demographics, rules: Sequence[Rule] = RULES
) -> tuple[date, date] | None:
    """The blocking key: the DOB range any applicable rule accepts, [low, high)."""
    if query.dob is None:
        return None
    usable = applicable_rules(query, rules)
    if not usable:
        return None
    days = max(r.dob_tolerance_days for r in usable)
    return query.dob - timedelta(days=days), query.dob + timedelta(days=days + 1)
