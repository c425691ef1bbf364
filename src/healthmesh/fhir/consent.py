"""Patient privacy Consents (R4 consent.html, scope ``patient-privacy``) as flat rules.

A Consent's provision tree becomes :class:`ConsentRule` s, one per provision, each with its
depth in the tree: the root provision (depth 0) is the base policy — ``deny`` with nothing
else is an opt-out of the network, ``permit`` an opt-in — and nested provisions (depth 1, 2 …)
are exceptions to their parent. Unset dimensions are inherited from the parent (actor,
purpose, period are narrowed, never widened).

Deciding for one access and one row (docs/privacy.md): of the rules that apply, the deepest
decides and, at equal depth, deny wins over permit. The store keeps the rules of every active
Consent in ``consent_rule`` so that decision compiles into SQL (store/access.py).

Vocabulary (what the dimensions hold):

- actor: ``client:<client_id>`` (an app, by ``Reference.identifier`` with system
  :data:`CLIENT_ID_SYSTEM`), ``organization:<id>`` (``Organization/<id>`` or an identifier with
  :data:`ORGANIZATION_ID_SYSTEM`, matched against the hl7-b2b ``organization_id``), or a
  literal reference such as ``Practitioner/<id>`` (matched against the token's fhirUser);
- purpose: v3 ActReason codes (TREAT, HPAYMT, HOPERAT, PATRQT, HRESCH, HMARKT …);
- class: resource types; code: HealthMesh data categories (:data:`DATA_CATEGORIES`);
- securityLabel: HL7 security label codes (ETH, PSY, SEX, HIV, GDIS …, R, V).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from healthmesh.fhir.dates import parse_interval
from healthmesh.fhir.errors import Issue
from healthmesh.fhir.structure import is_resource_type

CLIENT_ID_SYSTEM = "urn:healthmesh:client-id"
ORGANIZATION_ID_SYSTEM = "urn:healthmesh:organization-id"
CATEGORY_SYSTEM = "https://healthmesh.dev/fhir/CodeSystem/data-category"
SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"

# What the node's enforcement is about: who may read (access, use) and receive (disclose)
# the data. A provision about other actions — collecting it, correcting it — read as a rule
# of access would permit or deny what the patient did not mean, so it is refused.
ENFORCED_ACTIONS = frozenset({"access", "use", "disclose"})

# Purposes no consent can permit: marketing and the sale of data (the framework's red line).
ALWAYS_DENIED_PURPOSES = frozenset({"HMARKT"})  # v3 ActReason: marketing

# Sensitivity classes withheld from apps and organizations unless explicitly permitted
# (HL7 v3 ActCode sensitivity codes and v3 Confidentiality R/V).
SENSITIVE_LABELS = frozenset(
    {"ETH", "SUD", "PSY", "BH", "SEX", "HIV", "STD", "SDV", "GDIS", "R", "V"}
)

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True, slots=True)
class DataCategory:
    """What a category covers: whole resource types, and types narrowed by their category."""

    types: frozenset[str]
    by_category: frozenset[tuple[str, str]] = frozenset()  # (type, category code)


DATA_CATEGORIES: Mapping[str, DataCategory] = {
    "labs": DataCategory(
        frozenset(), frozenset({("Observation", "laboratory"), ("DiagnosticReport", "LAB")})
    ),
    "vital-signs": DataCategory(frozenset(), frozenset({("Observation", "vital-signs")})),
    "medications": DataCategory(
        frozenset(
            {
                "MedicationRequest",
                "MedicationStatement",
                "MedicationAdministration",
                "MedicationDispense",
            }
        )
    ),
    "conditions": DataCategory(frozenset({"Condition"})),
    "allergies": DataCategory(frozenset({"AllergyIntolerance"})),
    "immunizations": DataCategory(frozenset({"Immunization"})),
    "procedures": DataCategory(frozenset({"Procedure"})),
    "encounters": DataCategory(frozenset({"Encounter"})),
    "documents": DataCategory(frozenset({"DocumentReference", "Composition"})),
    "claims": DataCategory(
        frozenset({"Claim", "ClaimResponse", "ExplanationOfBenefit", "Coverage"})
    ),
    "imaging": DataCategory(
        frozenset({"ImagingStudy", "Media"}), frozenset({("DiagnosticReport", "RAD")})
    ),
    "care-plans": DataCategory(frozenset({"CarePlan", "CareTeam", "Goal"})),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRule:
    """One provision, flattened. ``None`` in a dimension: not restricted by it."""

    effect: str  # permit | deny
    depth: int
    actors: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    types: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    labels: frozenset[str] | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_base(self) -> bool:
        """No data scope: the rule covers the whole record (opt-in, opt-out, per recipient)."""
        return self.types is None and self.categories is None and self.labels is None


class ConsentError(Exception):
    """A Consent that cannot be enforced as written; ``issues`` say what and where."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = list(issues)


def is_privacy_consent(resource: Mapping[str, Any]) -> bool:
    scope = resource.get("scope")
    codings = scope.get("coding", []) if isinstance(scope, dict) else []
    return any(
        isinstance(c, dict)
        and c.get("system") == SCOPE_SYSTEM
        and c.get("code") == "patient-privacy"
        for c in codings
    )


def _codes(items: Any, system: str | None) -> list[str]:
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and (system is None or item.get("system") == system):
            code = item.get("code")
            if isinstance(code, str):
                out.append(code)
    return out


class _Reader:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, where: str, message: str) -> None:
        self.issues.append(Issue(code="invariant", diagnostics=message, expression=where))

    def unenforceable(self, provision: Mapping[str, Any], where: str) -> None:
        """Refuse what a provision may say that the node does not enforce: were it ignored,
        a permit of one resource (``data``) or of data recorded in a period
        (``dataPeriod``) would permit all of it, and a deny of correcting data (``action``)
        would deny reading it."""
        for element, what in (
            ("data", "particular resources"),
            ("dataPeriod", "when the data was recorded"),
        ):
            if provision.get(element):
                self.fail(
                    f"{where}.{element}",
                    f"this node cannot enforce {element} (a provision about {what}); name the"
                    " data by class, code or securityLabel instead",
                )
        actions = provision.get("action")
        for n, action in enumerate(actions if isinstance(actions, list) else []):
            codings = action.get("coding") if isinstance(action, dict) else None
            codes = set(_codes(codings, ACTION_SYSTEM))
            if not codes or not codes <= ENFORCED_ACTIONS:
                self.fail(
                    f"{where}.action[{n}]",
                    f"this node enforces the actions {', '.join(sorted(ENFORCED_ACTIONS))}"
                    f" ({ACTION_SYSTEM}); a provision about others it cannot enforce",
                )
        if actions is not None and not isinstance(actions, list):
            self.fail(f"{where}.action", "action is a list of CodeableConcepts")

    def actors(self, provision: Mapping[str, Any], where: str) -> frozenset[str] | None:
        actors = provision.get("actor")
        if not actors:
            return None
        found = set()
        for n, actor in enumerate(actors if isinstance(actors, list) else []):
            at = f"{where}.actor[{n}].reference"
            reference = actor.get("reference") if isinstance(actor, dict) else None
            if not isinstance(reference, dict):
                self.fail(at, "an actor needs a reference (an app, organization or person)")
                continue
            literal = reference.get("reference")
            identifier = reference.get("identifier")
            if isinstance(literal, str) and "/" in literal:
                kind, _, ident = literal.rpartition("/")
                kind = kind.rsplit("/", 1)[-1]
                found.add(f"organization:{ident}" if kind == "Organization" else f"{kind}/{ident}")
            elif isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                system = identifier.get("system")
                if system == CLIENT_ID_SYSTEM:
                    found.add(f"client:{identifier['value']}")
                elif system == ORGANIZATION_ID_SYSTEM:
                    found.add(f"organization:{identifier['value']}")
                else:
                    self.fail(
                        at,
                        f"an actor identifier must use {CLIENT_ID_SYSTEM} (apps) or"
                        f" {ORGANIZATION_ID_SYSTEM} (organizations)",
                    )
            else:
                self.fail(at, "an actor reference must name Type/id or an identifier")
        return frozenset(found)

    def purposes(self, provision: Mapping[str, Any], where: str) -> frozenset[str] | None:
        purposes = provision.get("purpose")
        if not purposes:
            return None
        codes = _codes(purposes, PURPOSE_SYSTEM)
        if len(codes) != len(purposes):
            self.fail(f"{where}.purpose", f"purposes of use are codes of {PURPOSE_SYSTEM}")
        return frozenset(codes)

    def types(self, provision: Mapping[str, Any], where: str) -> frozenset[str] | None:
        classes = provision.get("class")
        if not classes:
            return None
        found = set()
        for n, c in enumerate(classes if isinstance(classes, list) else []):
            code = c.get("code") if isinstance(c, dict) else None
            if (
                not isinstance(c, dict)
                or c.get("system") != RESOURCE_TYPES_SYSTEM
                or not isinstance(code, str)
                or not is_resource_type(code)
            ):
                self.fail(
                    f"{where}.class[{n}]", f"class names a resource type ({RESOURCE_TYPES_SYSTEM})"
                )
                continue
            found.add(code)
        return frozenset(found)

    def categories(self, provision: Mapping[str, Any], where: str) -> frozenset[str] | None:
        concepts = provision.get("code")
        if not concepts:
            return None
        found: set[str] = set()
        for n, concept in enumerate(concepts if isinstance(concepts, list) else []):
            codings = concept.get("coding", []) if isinstance(concept, dict) else []
            codes = _codes(codings, CATEGORY_SYSTEM)
            unknown = [c for c in codes if c not in DATA_CATEGORIES]
            if not codes or unknown:
                self.fail(
                    f"{where}.code[{n}]",
                    f"code names data categories of {CATEGORY_SYSTEM}: one of "
                    + ", ".join(sorted(DATA_CATEGORIES)),
                )
            found.update(c for c in codes if c in DATA_CATEGORIES)
        return frozenset(found)

    def labels(self, provision: Mapping[str, Any], where: str) -> frozenset[str] | None:
        labels = provision.get("securityLabel")
        if not labels:
            return None
        codes = _codes(labels, None)
        if len(codes) != len(labels):
            self.fail(f"{where}.securityLabel", "security labels need a code")
        return frozenset(codes)

    def period(
        self, provision: Mapping[str, Any], where: str
    ) -> tuple[datetime | None, datetime | None]:
        period = provision.get("period")
        if not isinstance(period, dict):
            return None, None
        start = end = None
        if isinstance(period.get("start"), str):
            interval = parse_interval(period["start"])
            start = interval.low if interval else None
        if isinstance(period.get("end"), str):
            interval = parse_interval(period["end"])
            end = interval.high if interval else None
        if start is not None and end is not None and end < start:
            self.fail(f"{where}.period", "the period ends before it starts")
        return start, end


def _narrow(parent: frozenset[str] | None, own: frozenset[str] | None) -> frozenset[str] | None:
    if own is None:
        return parent
    if parent is None:
        return own
    return parent & own


def consent_rules(resource: Mapping[str, Any]) -> list[ConsentRule]:
    """The rules of an active patient-privacy Consent; [] for other Consents.

    Raises :class:`ConsentError` when the Consent is malformed or contradictory, so that it is
    refused at write time rather than enforced in a way the patient did not mean.
    """
    if not is_privacy_consent(resource):
        return []
    reader = _Reader()
    patient = resource.get("patient")
    if not isinstance(patient, dict) or not str(patient.get("reference", "")).startswith(
        "Patient/"
    ):
        reader.fail("Consent.patient", "a patient-privacy Consent names its Patient")
    provision = resource.get("provision")
    status = resource.get("status")
    if not isinstance(provision, dict):
        if status == "active":
            reader.fail("Consent.provision", "an active privacy Consent needs a provision")
        if reader.issues:
            raise ConsentError(reader.issues)
        return []
    if provision.get("type") not in ("permit", "deny"):
        reader.fail("Consent.provision.type", "the base provision is a permit or a deny")
    rules: list[ConsentRule] = []
    root = ConsentRule(effect="deny", depth=-1)
    _walk(reader, provision, "Consent.provision", root, rules)
    if reader.issues:
        raise ConsentError(reader.issues)
    return rules if status == "active" else []


def _walk(
    reader: _Reader,
    provision: Mapping[str, Any],
    where: str,
    parent: ConsentRule,
    out: list[ConsentRule],
) -> None:
    effect = provision.get("type")
    if effect is None and parent.depth >= 0:
        effect = "deny" if parent.effect == "permit" else "permit"  # an exception to its parent
    start, end = reader.period(provision, where)
    reader.unenforceable(provision, where)
    own = {
        "actor": (parent.actors, reader.actors(provision, where)),
        "purpose": (parent.purposes, reader.purposes(provision, where)),
        "class": (parent.types, reader.types(provision, where)),
        "code": (parent.categories, reader.categories(provision, where)),
        "securityLabel": (parent.labels, reader.labels(provision, where)),
    }
    for element, (inherited, given) in own.items():
        # A nested provision narrows its parent (R4 Consent.provision.provision): one whose
        # values are all outside its parent's could never apply — a contradiction, refused
        # rather than silently ignored.
        if inherited is not None and given and not inherited & given:
            reader.fail(
                f"{where}.{element}",
                f"none of this provision's {element} values is among its parent's,"
                " so it could never apply",
            )
    rule = replace(
        parent,
        effect=str(effect),
        depth=parent.depth + 1,
        actors=_narrow(*own["actor"]),
        purposes=_narrow(*own["purpose"]),
        types=_narrow(*own["class"]),
        categories=_narrow(*own["code"]),
        labels=_narrow(*own["securityLabel"]),
        start=max(filter(None, (parent.start, start)), default=None),
        end=min(filter(None, (parent.end, end)), default=None),
    )
    if effect not in ("permit", "deny"):
        reader.fail(f"{where}.type", "a provision is a permit or a deny")
    if rule.effect == "permit" and rule.purposes and rule.purposes <= ALWAYS_DENIED_PURPOSES:
        reader.fail(f"{where}.purpose", "marketing and the sale of data can never be permitted")
    if rule.start is not None and rule.end is not None and rule.end < rule.start:
        reader.fail(f"{where}.period", "the period lies outside its parent provision's period")
    out.append(rule)
    for n, child in enumerate(provision.get("provision") or []):
        if isinstance(child, dict):
            _walk(reader, child, f"{where}.provision[{n}]", rule, out)
