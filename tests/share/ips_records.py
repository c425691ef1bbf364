"""A small hand-made record for the summary and shared-bundle tests (no shared data needed).

Ada has something for every IPS section, plus what a summary must leave out (a resolved and
an entered-in-error Condition, a stopped prescription, an older lab value, an Encounter) and
references it must not follow (to Bob, to another server). Bob has a record of his own.
Ids carry a per-run suffix: the test database is shared by every module of a worker.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx

from support import FHIR_JSON

Resource = dict[str, Any]
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


class Ids:
    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:8]

    def __call__(self, name: str) -> str:
        return f"{name}-{self.run}"


def _concept(system: str, code: str, display: str) -> Resource:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _condition(cid: str, patient: str, status: str, display: str, **extra: Any) -> Resource:
    body: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "code": _concept(SNOMED, cid, display),
        "subject": {"reference": f"Patient/{patient}"},
        "onsetDateTime": "2019-04-01",
    }
    body.update(extra)
    return body


def _lab(oid: str, patient: str, code: str, display: str, value: float, when: str) -> Resource:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
        "code": _concept(LOINC, code, display),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org"},
    }


def ada_record(ids: Ids) -> list[Resource]:
    """Ada's record (and Bob's Patient), in an order a transaction can PUT."""
    ada, bob = ids("ada"), ids("bob")
    a = f"Patient/{ada}"
    return [
        {"resourceType": "Organization", "id": ids("insurer"), "name": f"Acme Health {ids.run}"},
        {"resourceType": "Practitioner", "id": ids("doc"), "name": [{"family": "Welby"}]},
        {
            "resourceType": "Patient",
            "id": ada,
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1985-12-10",
            "generalPractitioner": [{"reference": f"Practitioner/{ids('doc')}"}],
        },
        {
            "resourceType": "Patient",
            "id": bob,
            "name": [{"family": "Builder", "given": ["Bob"]}],
            "gender": "male",
            "birthDate": "1970-01-01",
        },
        {
            "resourceType": "Encounter",
            "id": ids("visit"),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": a},
        },
        _condition(
            ids("asthma"),
            ada,
            "active",
            "Asthma",
            encounter={"reference": f"Encounter/{ids('visit')}"},
            asserter={"reference": f"Patient/{bob}", "display": "Bob Builder"},
        ),
        _condition(ids("flu"), ada, "resolved", "Influenza", abatementDateTime="2019-04-20"),
        {
            **_condition(ids("mistake"), ada, "active", "Leprosy"),
            "verificationStatus": {
                "coding": [{"system": VERIFICATION, "code": "entered-in-error"}]
            },
        },
        _condition(ids("gout"), bob, "active", "Gout"),
        {
            "resourceType": "AllergyIntolerance",
            "id": ids("peanut"),
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "category": ["food"],
            "criticality": "high",
            "code": _concept(SNOMED, "91935009", "Allergy to peanut"),
            "patient": {"reference": a},
            "reaction": [{"manifestation": [_concept(SNOMED, "39579001", "Anaphylaxis")]}],
        },
        {
            "resourceType": "Medication",
            "id": ids("salbutamol"),
            "code": _concept(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "245314", "Salbutamol inhaler"
            ),
        },
        {
            "resourceType": "MedicationStatement",
            "id": ids("takes-salbutamol"),
            "status": "active",
            "medicationReference": {"reference": f"Medication/{ids('salbutamol')}"},
            "subject": {"reference": a},
            "effectiveDateTime": "2024-02-01",
            "dosage": [{"text": "2 puffs when needed"}],
        },
        {
            "resourceType": "MedicationRequest",
            "id": ids("old-rx"),
            "status": "stopped",
            "intent": "order",
            "medicationCodeableConcept": _concept(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "1049221", "Oxycodone 5 MG"
            ),
            "subject": {"reference": a},
            "requester": {"reference": f"Practitioner/{ids('doc')}"},
        },
        {
            "resourceType": "MedicationRequest",
            "id": ids("current-rx"),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": _concept(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "197361", "Amlodipine 5 MG"
            ),
            "subject": {"reference": a},
            "authoredOn": "2025-01-05",
            "requester": {"reference": f"Practitioner/{ids('doc')}"},
            "dosageInstruction": [{"text": "once daily"}],
        },
        {
            "resourceType": "Immunization",
            "id": ids("flu-shot"),
            "status": "completed",
            "vaccineCode": _concept("http://hl7.org/fhir/sid/cvx", "140", "Influenza vaccine"),
            "patient": {"reference": a},
            "occurrenceDateTime": "2025-10-01",
        },
        _lab(ids("a1c-old"), ada, "4548-4", "Hemoglobin A1c", 7.9, "2023-01-10"),
        _lab(ids("a1c-new"), ada, "4548-4", "Hemoglobin A1c", 6.4, "2025-06-10"),
        _lab(ids("ldl"), ada, "13457-7", "LDL cholesterol", 120, "2025-06-10"),
        {
            "resourceType": "DiagnosticReport",
            "id": ids("panel"),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}
                    ]
                }
            ],
            "code": _concept(LOINC, "24331-1", "Lipid panel"),
            "subject": {"reference": a},
            "effectiveDateTime": "2025-06-10",
            "result": [{"reference": f"Observation/{ids('ldl')}", "display": "LDL"}],
        },
        {
            "resourceType": "Observation",
            "id": ids("bp"),
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs"}]}],
            "code": _concept(LOINC, "85354-9", "Blood pressure panel"),
            "subject": {"reference": a},
            "effectiveDateTime": "2025-06-10",
            "performer": [{"reference": "https://elsewhere.example/fhir/Practitioner/9"}],
            "component": [
                {
                    "code": _concept(LOINC, "8480-6", "Systolic"),
                    "valueQuantity": {"value": 118, "unit": "mmHg"},
                },
                {
                    "code": _concept(LOINC, "8462-4", "Diastolic"),
                    "valueQuantity": {"value": 76, "unit": "mmHg"},
                },
            ],
        },
        {
            "resourceType": "Observation",
            "id": ids("smoking"),
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "social-history"}]}],
            "code": _concept(LOINC, "72166-2", "Tobacco smoking status"),
            "subject": {"reference": a},
            "effectiveDateTime": "2025-06-10",
            "valueCodeableConcept": _concept(SNOMED, "266919005", "Never smoker"),
        },
        {
            "resourceType": "Procedure",
            "id": ids("appendix"),
            "status": "completed",
            "code": _concept(SNOMED, "80146002", "Appendectomy"),
            "subject": {"reference": a},
            "performedDateTime": "2001-07-04",
        },
        {
            "resourceType": "Device",
            "id": ids("pump"),
            "status": "active",
            "deviceName": [{"name": "Insulin pump", "type": "user-friendly-name"}],
            "patient": {"reference": a},
        },
        {
            "resourceType": "DeviceUseStatement",
            "id": ids("uses-pump"),
            "status": "active",
            "subject": {"reference": a},
            "device": {"reference": f"Device/{ids('pump')}"},
            "timingDateTime": "2024-03-01",
        },
        {
            "resourceType": "CarePlan",
            "id": ids("plan"),
            "status": "active",
            "intent": "plan",
            "title": "Asthma action plan",
            "subject": {"reference": a},
            "addresses": [{"reference": f"Condition/{ids('asthma')}"}],
            "period": {"start": "2024-01-01"},
        },
        {
            "resourceType": "Coverage",
            "id": ids("coverage"),
            "status": "active",
            "subscriberId": "M123456",
            "beneficiary": {"reference": a},
            "payor": [{"reference": f"Organization/{ids('insurer')}"}],
            "type": _concept(
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "HIP",
                "health insurance plan policy",
            ),
        },
    ]


def put_all(client: httpx.Client, resources: list[Resource]) -> None:
    """Store ``resources`` in one transaction (PUT, so ids are ours)."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }
    response = client.post("", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text


def minimal_pdf(text: str = "Hello") -> bytes:
    """A tiny but well-formed one-page PDF, as a patient's app might attach."""
    from healthmesh.share.pdf import PdfDocument, render

    return render(PdfDocument(title=text, subtitle="patient letter", facts=[]))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def section(bundle: Resource, code: str) -> Resource | None:
    composition = bundle["entry"][0]["resource"]
    found = [s for s in composition["section"] if s["code"]["coding"][0]["code"] == code]
    return found[0] if found else None


def carried(bundle: Resource) -> dict[str, Resource]:
    """The Bundle's resources by ``Type/id``."""
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
    }
