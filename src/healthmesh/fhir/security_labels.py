"""Sensitive-data segmentation: HL7 security labels from coded content, at write time.

A resource whose clinical codes match the rule table (``data/security-label-rules.csv``:
ICD-10-CM, SNOMED CT, LOINC and RxNorm codes) gets the sensitivity label in ``meta.security``
(v3 ActCode: ETH substance use, PSY behavioural health, SEX reproductive health, HIV, STD,
GDIS genetic) and confidentiality R (restricted). Labels already present are kept; nothing is
removed, so a label a clinician set by hand survives. Enforcement of the labels is the consent
layer's (store/consent_sql.py, docs/privacy.md).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LABEL_DISPLAY = {
    "ETH": "substance abuse information sensitivity",
    "PSY": "psychiatry information sensitivity",
    "SEX": "sexuality and reproductive health information sensitivity",
    "HIV": "HIV/AIDS information sensitivity",
    "STD": "sexually transmitted disease information sensitivity",
    "GDIS": "genetic disease information sensitivity",
}

# Where each type keeps the codes that say what it is about (CodeableConcepts, by JSON path).
CODED_PATHS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "Condition": (("code",),),
    "Observation": (("code",), ("valueCodeableConcept",)),
    "Procedure": (("code",), ("reasonCode",)),
    "DiagnosticReport": (("code",), ("conclusionCode",)),
    "MedicationRequest": (("medicationCodeableConcept",), ("reasonCode",)),
    "MedicationStatement": (("medicationCodeableConcept",), ("reasonCode",)),
    "MedicationAdministration": (("medicationCodeableConcept",), ("reasonCode",)),
    "MedicationDispense": (("medicationCodeableConcept",),),
    "Encounter": (("reasonCode",), ("diagnosis", "condition")),
    "ServiceRequest": (("code",), ("reasonCode",)),
    "CarePlan": (("category",), ("addresses",)),
    "Claim": (("diagnosis", "diagnosisCodeableConcept"), ("item", "productOrService")),
    "ExplanationOfBenefit": (
        ("diagnosis", "diagnosisCodeableConcept"),
        ("item", "productOrService"),
    ),
}


@dataclass(frozen=True, slots=True)
class LabelRules:
    exact: Mapping[tuple[str, str], frozenset[str]]  # (system, code) -> labels
    prefixes: Mapping[str, tuple[tuple[str, str], ...]]  # system -> ((prefix, label), ...)
    digest: str  # identifies the table: stored data is re-labelled when it changes

    def labels_for(self, system: str, code: str) -> set[str]:
        found = set(self.exact.get((system, code), ()))
        for prefix, label in self.prefixes.get(system, ()):
            if code.startswith(prefix):
                found.add(label)
        return found


@cache
def rules() -> LabelRules:
    text = resources.files("healthmesh.fhir").joinpath("data/security-label-rules.csv").read_text()
    exact: dict[tuple[str, str], set[str]] = {}
    prefixes: dict[str, list[tuple[str, str]]] = {}
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for label, system, match, code, _description in csv.reader(lines):
        if match == "prefix":
            prefixes.setdefault(system, []).append((code, label))
        else:
            exact.setdefault((system, code), set()).add(label)
    return LabelRules(
        exact={k: frozenset(v) for k, v in exact.items()},
        prefixes={k: tuple(v) for k, v in prefixes.items()},
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
    )


def _values(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def _codings(concept: Any) -> Iterator[tuple[str, str]]:
    for item in concept if isinstance(concept, list) else [concept]:
        if not isinstance(item, dict):
            continue
        # CodeableReference-like shapes (Encounter.diagnosis.condition is a Reference): skip.
        for coding in item.get("coding", []) if isinstance(item.get("coding"), list) else []:
            if isinstance(coding, dict):
                system, code = coding.get("system"), coding.get("code")
                if isinstance(system, str) and isinstance(code, str):
                    yield system, code


def sensitivity_labels(resource: Mapping[str, Any], table: LabelRules | None = None) -> set[str]:
    """The sensitivity codes the resource's clinical codes call for (maybe none)."""
    table = table or rules()
    found: set[str] = set()
    for path in CODED_PATHS.get(str(resource.get("resourceType")), ()):
        for concept in _values(resource, path):
            for system, code in _codings(concept):
                found |= table.labels_for(system, code)
    return found


def apply_security_labels(resource: dict[str, Any], table: LabelRules | None = None) -> bool:
    """Add the labels the rules call for to ``meta.security`` (in place); True if it changed.

    Idempotent: labelling a labelled resource changes nothing.
    """
    labels = sensitivity_labels(resource, table)
    if not labels:
        return False
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    security = list(meta.get("security") or [])
    present = {(s.get("system"), s.get("code")) for s in security if isinstance(s, dict)}
    wanted = [(ACT_CODE, label) for label in sorted(labels)] + [(CONFIDENTIALITY, "R")]
    added = False
    for system, code in wanted:
        if (system, code) in present:
            continue
        coding: dict[str, Any] = {"system": system, "code": code}
        if system == ACT_CODE and code in LABEL_DISPLAY:
            coding["display"] = LABEL_DISPLAY[code]
        elif system == CONFIDENTIALITY:
            coding["display"] = "restricted"
        security.append(coding)
        added = True
    if added:
        meta["security"] = security
        resource["meta"] = meta
    return added
