"""The policy matrix's world: patients, their records, their Consents, and the recipients.

Every patient has the same record — one resource per data category and sensitivity class
below — and their own set of Consents: hand-written ones for the cases docs/privacy.md names,
and generated ones (seeded; ``HEALTHMESH_POLICY_SEED`` picks another seed) whose provision
trees mix actors, purposes, classes, categories, labels, periods and nesting.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policy_oracle import CLIENT_ID_SYSTEM, ORGANIZATION_ID_SYSTEM, Access

RUN = uuid.uuid4().hex[:8]
SEED = int(os.environ.get("HEALTHMESH_POLICY_SEED", "20261201"))
RANDOM_PATIENTS = 8

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CATEGORY_SYSTEM = "https://healthmesh.dev/fhir/CodeSystem/data-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SCOPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}
RECIPIENT = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


def rid(name: str) -> str:
    return f"{name}-{RUN}"


# --- recipients ----------------------------------------------------------------------------

CLINIC, PAYER, RESEARCH, EHR, ADS = (rid(n) for n in ("clinic", "payer", "research", "ehr", "ads"))
OWN_APP, NOSY_APP, PORTAL = rid("patient-app"), rid("nosy-app"), rid("portal")
DOCTOR = "Practitioner/" + rid("dr-house")


@dataclass(frozen=True)
class Recipient:
    """An Access for the oracle, and the token that stands for it."""

    access: Access
    scope: str
    client_id: str
    organization: str | None = None
    fhir_user: str | None = None
    patient: str | None = None


def _recipient(
    name: str,
    scope: str,
    client_id: str,
    purpose: str | None,
    *,
    organization: str | None = None,
    fhir_user: str | None = None,
    patient: str | None = None,
    acting: bool = False,
) -> Recipient:
    actors = {f"client:{client_id}"}
    if organization:
        actors.add(f"organization:{organization}")
    if fhir_user:
        actors.add(fhir_user)
    access = Access(
        name=name,
        actors=frozenset(actors),
        purpose=purpose,
        scope_patient=patient,
        acting_patient=patient if acting else None,
    )
    return Recipient(access, scope, client_id, organization, fhir_user, patient)


def organizations() -> list[Recipient]:
    return [
        _recipient("clinic/TREAT", "system/*.rs", CLINIC, "TREAT", organization="org-clinic"),
        _recipient("clinic/HOPERAT", "system/*.rs", CLINIC, "HOPERAT", organization="org-clinic"),
        _recipient("payer/HPAYMT", "system/*.rs", PAYER, "HPAYMT", organization="org-payer"),
        _recipient("payer/TREAT", "system/*.rs", PAYER, "TREAT", organization="org-payer"),
        _recipient("research/HRESCH", "system/*.rs", RESEARCH, "HRESCH"),
        _recipient("research/none", "system/*.rs", RESEARCH, None),
        _recipient("ads/HMARKT", "system/*.rs", ADS, "HMARKT"),
        _recipient("doctor/TREAT", "user/*.rs", EHR, "TREAT", fhir_user=DOCTOR),
        _recipient("doctor/none", "user/*.rs", EHR, None, fhir_user=DOCTOR),
    ]


def for_patient(patient: str) -> list[Recipient]:
    """Apps acting for the patient, and a practitioner's app launched with them in context."""
    return [
        _recipient(
            f"own-app/{patient}",
            "patient/*.rs patient/Consent.c",
            OWN_APP,
            "PATRQT",
            patient=patient,
            acting=True,
        ),
        _recipient(
            f"nosy-app/{patient}", "patient/*.rs", NOSY_APP, "PATRQT", patient=patient, acting=True
        ),
        _recipient(
            f"doctor-in-context/{patient}",
            "patient/*.rs",
            EHR,
            "TREAT",
            fhir_user=DOCTOR,
            patient=patient,
        ),
    ]


# --- records -------------------------------------------------------------------------------


def _label(*codes: str) -> dict[str, Any]:
    return {"security": [{"system": ACT_CODE, "code": c} for c in codes]}


def record(patient: str) -> list[dict[str, Any]]:
    """One patient's record: a resource per category, plain and sensitive."""
    subject = {"reference": f"Patient/{patient}"}

    def obs(name: str, category: str, code: str, **extra: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"{patient}-{name}",
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": subject,
            **extra,
        }

    return [
        {"resourceType": "Patient", "id": patient, "name": [{"family": patient}]},
        obs("lab", "laboratory", "2345-7"),
        obs("vital", "vital-signs", "8867-4"),
        obs("hiv-lab", "laboratory", "7917-8", meta=_label("HIV")),
        {
            "resourceType": "Condition",
            "id": f"{patient}-asthma",
            "subject": subject,
            "code": {"text": "asthma"},
        },
        {  # labelled ETH and R at write time from the SNOMED CT rule (alcoholism)
            "resourceType": "Condition",
            "id": f"{patient}-alcohol",
            "subject": subject,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "7200002"}]},
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"{patient}-aspirin",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "aspirin"},
            "subject": subject,
        },
        {
            "resourceType": "DiagnosticReport",
            "id": f"{patient}-xray",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}
                    ]
                }
            ],
            "code": {"text": "chest x-ray"},
            "subject": subject,
        },
        {
            "resourceType": "Immunization",
            "id": f"{patient}-flu",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": subject,
            "occurrenceDateTime": "2021-10-01",
        },
        {
            "resourceType": "Coverage",
            "id": f"{patient}-coverage",
            "status": "active",
            "beneficiary": subject,
            "payor": [{"display": "Example Health Plan"}],
        },
        {
            "resourceType": "DocumentReference",
            "id": f"{patient}-therapy-note",
            "meta": _label("PSY"),
            "status": "current",
            "subject": subject,
            "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}],
        },
    ]


REFERENCE_DATA: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": rid("org-clinic"), "name": "Example Clinic"},
    {"resourceType": "Practitioner", "id": rid("dr-house"), "name": [{"family": "House"}]},
]


# --- Consents ------------------------------------------------------------------------------


def app(client_id: str) -> dict[str, Any]:
    return {
        "role": RECIPIENT,
        "reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}},
    }


def organization(org: str, *, by_reference: bool) -> dict[str, Any]:
    if by_reference:
        return {"role": RECIPIENT, "reference": {"reference": f"Organization/{org}"}}
    identifier = {"system": ORGANIZATION_ID_SYSTEM, "value": org}
    return {"role": RECIPIENT, "reference": {"identifier": identifier}}


def practitioner(reference: str) -> dict[str, Any]:
    return {"role": RECIPIENT, "reference": {"reference": reference}}


def purpose(*codes: str) -> list[dict[str, Any]]:
    return [{"system": PURPOSE_SYSTEM, "code": c} for c in codes]


def category(*codes: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CATEGORY_SYSTEM, "code": c}]} for c in codes]


def resource_class(*types: str) -> list[dict[str, Any]]:
    return [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in types]


def labels(*codes: str) -> list[dict[str, Any]]:
    system = {"R": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"}
    return [{"system": system.get(c, ACT_CODE), "code": c} for c in codes]


CURRENT = {"start": "2020-01-01", "end": "2099-12-31"}
PAST = {"start": "2019-01-01", "end": "2020-12-31"}
FUTURE = {"start": "2098-01-01"}


def consent(patient: str, provision: dict[str, Any], status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "provision": provision,
    }


def transaction(resources: list[dict[str, Any]], method: str = "PUT") -> dict[str, Any]:
    """A transaction Bundle writing ``resources``: PUT by id, or POST."""

    def request(r: dict[str, Any]) -> dict[str, str]:
        if method == "POST":
            return {"method": "POST", "url": r["resourceType"]}
        return {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": r, "request": request(r)} for r in resources],
    }


Scenario = Callable[[str], list[dict[str, Any]]]

# The cases docs/privacy.md and the issue name, one patient each.
SCENARIOS: dict[str, Scenario] = {
    "no-consent": lambda p: [],
    "opt-out": lambda p: [consent(p, {"type": "deny"})],
    "all-but-labs": lambda p: [
        consent(p, {"type": "permit", "provision": [{"type": "deny", "code": category("labs")}]})
    ],
    "treatment-only": lambda p: [
        consent(p, {"type": "deny", "provision": [{"type": "permit", "purpose": purpose("TREAT")}]})
    ],
    "clinic-sees-substance-use": lambda p: [
        consent(
            p,
            {
                "type": "permit",
                "provision": [
                    {"type": "permit", "actor": [app(CLINIC)], "securityLabel": labels("ETH")}
                ],
            },
        )
    ],
    "deny-wins-across-consents": lambda p: [
        consent(p, {"type": "permit", "code": category("labs"), "securityLabel": labels("HIV")}),
        consent(p, {"type": "deny", "code": category("labs")}),
        consent(p, {"type": "permit", "code": category("conditions")}),
    ],
    "deny-one-app-and-one-payer": lambda p: [
        consent(
            p,
            {
                "type": "permit",
                "provision": [
                    {"type": "deny", "actor": [app(NOSY_APP)]},
                    {"type": "deny", "actor": [organization("org-payer", by_reference=False)]},
                ],
            },
        )
    ],
    "explicit-permits": lambda p: [
        consent(p, {"type": "permit", "actor": [organization("org-clinic", by_reference=True)]}),
        consent(
            p,
            {
                "type": "permit",
                "actor": [practitioner(DOCTOR)],
                "purpose": purpose("TREAT"),
                "provision": [{"type": "permit", "securityLabel": labels("HIV", "PSY")}],
            },
        ),
    ],
    "periods": lambda p: [
        consent(p, {"type": "deny", "period": PAST}),
        consent(p, {"type": "deny", "period": FUTURE}),
        consent(p, {"type": "deny", "actor": [app(RESEARCH)], "period": CURRENT}),
    ],
    "inactive-opt-out": lambda p: [consent(p, {"type": "deny"}, status="inactive")],
    "research-only-imaging-and-vitals": lambda p: [
        consent(
            p,
            {
                "type": "deny",
                "actor": [app(RESEARCH)],
                "provision": [
                    {"purpose": purpose("HRESCH"), "code": category("imaging", "vital-signs")}
                ],
            },
        )
    ],
    "classes-and-labels": lambda p: [
        consent(
            p,
            {
                "type": "permit",
                "provision": [
                    {
                        "type": "deny",
                        "class": resource_class("Observation", "Coverage"),
                        "provision": [{"code": category("vital-signs")}],
                    },
                    {"type": "permit", "securityLabel": labels("R")},
                ],
            },
        )
    ],
}


# --- generated Consents --------------------------------------------------------------------

ACTORS: list[Callable[[], dict[str, Any]]] = [
    lambda: app(CLINIC),
    lambda: organization("org-clinic", by_reference=True),
    lambda: organization("org-payer", by_reference=False),
    lambda: app(RESEARCH),
    lambda: practitioner(DOCTOR),
    lambda: app(OWN_APP),
    lambda: app(NOSY_APP),
]
PURPOSES = ["TREAT", "HPAYMT", "HOPERAT", "PATRQT", "HRESCH"]
CATEGORY_CODES = [
    "labs",
    "vital-signs",
    "medications",
    "conditions",
    "documents",
    "claims",
    "imaging",
    "immunizations",
]
TYPES = ["Observation", "Condition", "Patient", "DiagnosticReport", "Coverage"]
LABELS = ["ETH", "HIV", "PSY", "R"]
PERIODS = [CURRENT, PAST, FUTURE]


POOLS: dict[str, list[Any]] = {
    "actor": list(range(len(ACTORS))),
    "purpose": PURPOSES,
    "class": TYPES,
    "code": CATEGORY_CODES,
    "securityLabel": LABELS,
}
BUILD: dict[str, Callable[[list[Any]], list[dict[str, Any]]]] = {
    "actor": lambda picked: [ACTORS[n]() for n in picked],
    "purpose": lambda picked: purpose(*picked),
    "class": lambda picked: resource_class(*picked),
    "code": lambda picked: category(*picked),
    "securityLabel": lambda picked: labels(*picked),
}


def _random_provision(
    rng: random.Random, depth: int, *, inherited: dict[str, list[Any]], period_above: bool
) -> dict[str, Any]:
    """A provision and its exceptions. A nested one narrows what it inherits (values of its
    parent's, never disjoint ones: the server refuses those as contradictions)."""
    node: dict[str, Any] = {}
    if depth == 0 or rng.random() < 0.7:
        node["type"] = rng.choice(["permit", "deny"])
    dimensions = list(POOLS)
    if not period_above:
        dimensions.append("period")  # one period per path: nested periods must lie inside
    narrowed = dict(inherited)
    for dimension in rng.sample(dimensions, rng.choice([0, 1, 1, 2])):
        if dimension == "period":
            node["period"] = rng.choice(PERIODS)
            continue
        pool = inherited.get(dimension, POOLS[dimension])
        picked = rng.sample(pool, min(len(pool), rng.choice([1, 1, 2])))
        node[dimension] = BUILD[dimension](picked)
        narrowed[dimension] = picked
    if not node:  # an empty object is not valid JSON FHIR (json.html)
        node["type"] = rng.choice(["permit", "deny"])
    if depth < 2:
        children = [
            _random_provision(
                rng,
                depth + 1,
                inherited=narrowed,
                period_above=period_above or "period" in node,
            )
            for _ in range(rng.choice([0, 1, 1, 2] if depth == 0 else [0, 0, 1]))
        ]
        if children:
            node["provision"] = children
    return node


def random_scenario(rng: random.Random) -> Scenario:
    provisions = [
        _random_provision(rng, 0, inherited={}, period_above=False)
        for _ in range(rng.choice([1, 1, 2]))
    ]
    return lambda p: [consent(p, provision) for provision in provisions]


def all_scenarios() -> dict[str, Scenario]:
    rng = random.Random(SEED)
    generated = {f"random-{n}": random_scenario(rng) for n in range(RANDOM_PATIENTS)}
    return {**SCENARIOS, **generated}
