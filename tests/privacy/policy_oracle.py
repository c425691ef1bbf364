"""An independent model of who may see what: the consent rules as docs/privacy.md states them.

Written from the documentation and R4 Consent semantics (consent.html#provision), not from
the server's code: it reads Consent JSON itself and shares nothing with fhir/consent.py or
store/consent_sql.py, so a mistake in those shows up as a disagreement with this model.

The rules, for one access and one row of a patient's record:

- a provision *applies* when its actor, purpose and period match the access and its data
  scope (class = resource types, code = data categories, securityLabel) matches the row;
  nested provisions are exceptions: they inherit their parent's dimensions and narrow them,
  and a nested provision without ``type`` is the opposite of its parent;
- of the applicable provisions the deepest decides; at equal depth deny wins (across
  Consents too); none applicable: the deployment default (opt-out: shared, opt-in: not);
- a row with a sensitive label is shared only when an applicable permit that names a label
  outranks (is deeper than) every applicable deny;
- marketing (HMARKT) never sees patient data;
- on the patient's own rows, seen by the patient (through an app acting for them), only
  provisions that name an actor of the access apply, and no default hides anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CLIENT_ID_SYSTEM = "urn:healthmesh:client-id"
ORGANIZATION_ID_SYSTEM = "urn:healthmesh:organization-id"
SENSITIVE = frozenset({"ETH", "SUD", "PSY", "BH", "SEX", "HIV", "STD", "SDV", "GDIS", "R", "V"})
NEVER_PERMITTED = frozenset({"HMARKT"})

# docs/privacy.md, "Data categories": whole types, or (type, category code) pairs.
CATEGORIES: Mapping[str, tuple[frozenset[str], frozenset[tuple[str, str]]]] = {
    "labs": (frozenset(), frozenset({("Observation", "laboratory"), ("DiagnosticReport", "LAB")})),
    "vital-signs": (frozenset(), frozenset({("Observation", "vital-signs")})),
    "medications": (
        frozenset(
            {
                "MedicationRequest",
                "MedicationStatement",
                "MedicationAdministration",
                "MedicationDispense",
            }
        ),
        frozenset(),
    ),
    "conditions": (frozenset({"Condition"}), frozenset()),
    "allergies": (frozenset({"AllergyIntolerance"}), frozenset()),
    "immunizations": (frozenset({"Immunization"}), frozenset()),
    "procedures": (frozenset({"Procedure"}), frozenset()),
    "encounters": (frozenset({"Encounter"}), frozenset()),
    "documents": (frozenset({"DocumentReference", "Composition"}), frozenset()),
    "claims": (
        frozenset({"Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage"}),
        frozenset(),
    ),
    "imaging": (frozenset({"ImagingStudy", "Media"}), frozenset({("DiagnosticReport", "RAD")})),
    "care-plans": (frozenset({"CarePlan", "CareTeam", "Goal"}), frozenset()),
}


@dataclass(frozen=True)
class Row:
    """One stored resource as the policy sees it."""

    res_type: str
    id: str
    patient: str | None  # None: reference data, owned by no patient
    categories: frozenset[str] = frozenset()  # its category codes (Observation.category …)
    labels: frozenset[str] = frozenset()  # meta.security codes

    @property
    def key(self) -> str:
        return f"{self.res_type}/{self.id}"


@dataclass(frozen=True)
class Access:
    """A token: what its scopes reach, who it names, why it asks."""

    name: str
    actors: frozenset[str]  # client:<id>, organization:<id>, Practitioner/<id>
    purpose: str | None
    scope_patient: str | None = None  # patient/ scopes: only this patient's compartment
    acting_patient: str | None = None  # the patient the app acts for (their own rows)


@dataclass(frozen=True)
class Provision:
    effect: str
    depth: int
    actors: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    types: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    start: datetime | None = None
    end: datetime | None = None


def _narrow(parent: frozenset[str] | None, own: frozenset[str] | None) -> frozenset[str] | None:
    if own is None:
        return parent
    return own if parent is None else parent & own


def _actor_key(actor: Mapping[str, Any]) -> str:
    reference = actor["reference"]
    if "reference" in reference:
        kind, _, ident = str(reference["reference"]).rpartition("/")
        return f"organization:{ident}" if kind == "Organization" else f"{kind}/{ident}"
    identifier = reference["identifier"]
    prefix = "client" if identifier["system"] == CLIENT_ID_SYSTEM else "organization"
    return f"{prefix}:{identifier['value']}"


def _moment(text: str, *, end: bool) -> datetime:
    # Only whole dates far from today are used by the tests: a day's start or its end.
    day = datetime.fromisoformat(text[:10]).replace(tzinfo=UTC)
    return day.replace(hour=23, minute=59, second=59) if end else day


def _set(values: Iterable[str]) -> frozenset[str] | None:
    found = frozenset(values)
    return found or None


def provisions(consent: Mapping[str, Any]) -> list[Provision]:
    """An active Consent's provisions, flattened with their depth; [] when not active."""
    if consent.get("status") != "active":
        return []
    out: list[Provision] = []

    def walk(node: Mapping[str, Any], parent: Provision | None) -> None:
        effect = node.get("type")
        if effect is None:
            assert parent is not None, "the base provision has a type"
            effect = "deny" if parent.effect == "permit" else "permit"
        period = node.get("period", {})
        start = _moment(period["start"], end=False) if "start" in period else None
        end = _moment(period["end"], end=True) if "end" in period else None
        own = Provision(
            effect=effect,
            depth=0 if parent is None else parent.depth + 1,
            actors=_set(_actor_key(a) for a in node.get("actor", [])),
            purposes=_set(p["code"] for p in node.get("purpose", [])),
            types=_set(c["code"] for c in node.get("class", [])),
            categories=_set(c["coding"][0]["code"] for c in node.get("code", [])),
            labels=_set(s["code"] for s in node.get("securityLabel", [])),
            start=start,
            end=end,
        )
        if parent is not None:
            own = Provision(
                effect=own.effect,
                depth=own.depth,
                actors=_narrow(parent.actors, own.actors),
                purposes=_narrow(parent.purposes, own.purposes),
                types=_narrow(parent.types, own.types),
                categories=_narrow(parent.categories, own.categories),
                labels=_narrow(parent.labels, own.labels),
                start=max(filter(None, (parent.start, own.start)), default=None),
                end=min(filter(None, (parent.end, own.end)), default=None),
            )
        out.append(own)
        for child in node.get("provision", []):
            walk(child, own)

    walk(consent["provision"], None)
    return out


def _in_category(row: Row, category: str) -> bool:
    types, pairs = CATEGORIES[category]
    return row.res_type in types or any((row.res_type, c) in pairs for c in row.categories)


def applies(p: Provision, access: Access, row: Row, now: datetime, *, own: bool) -> bool:
    if own:  # the patient's own rows: only provisions naming this app (or another actor)
        if p.actors is None or not p.actors & access.actors:
            return False
    elif p.actors is not None and not p.actors & access.actors:
        return False
    if p.purposes is not None and access.purpose not in p.purposes:
        return False
    if (p.start is not None and now < p.start) or (p.end is not None and now >= p.end):
        return False
    if p.types is not None and row.res_type not in p.types:
        return False
    if p.categories is not None and not any(_in_category(row, c) for c in p.categories):
        return False
    return p.labels is None or bool(p.labels & row.labels)


@dataclass
class Oracle:
    """The expected answer for every (access, row), from the Consents of each patient."""

    consents: Mapping[str, Sequence[Mapping[str, Any]]]  # patient id -> Consent JSON
    default_permit: bool = True
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def visible(self, access: Access, row: Row) -> bool:
        if access.scope_patient is not None and row.patient not in (None, access.scope_patient):
            return False  # patient/ scopes reach one compartment (and reference data)
        if row.patient is None:
            return True  # reference data is not subject to Consent
        if access.purpose in NEVER_PERMITTED:
            return False
        own = row.patient == access.acting_patient
        rules = [
            p
            for consent in self.consents.get(row.patient, ())
            for p in provisions(consent)
            if applies(p, access, row, self.now, own=own)
        ]
        if rules:
            deepest = max(p.depth for p in rules)
            decided = {p.effect for p in rules if p.depth == deepest}
            allowed = "deny" not in decided
        else:
            allowed = own or self.default_permit
        if not allowed:
            return False
        if own or not row.labels & SENSITIVE:
            return True
        deny_depth = max((p.depth for p in rules if p.effect == "deny"), default=-1)
        return any(
            p.effect == "permit" and p.labels is not None and p.depth > deny_depth for p in rules
        )
