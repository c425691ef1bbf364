"""Sensitive-data labelling from coded content (fhir/security_labels.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from healthmesh.fhir.security_labels import (
    ACT_CODE,
    CONFIDENTIALITY,
    apply_security_labels,
    rules,
    sensitivity_labels,
)

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def condition(system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": system, "code": code}]},
    }


def labels_of(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["system"], s["code"]) for s in resource.get("meta", {}).get("security", [])}


@pytest.mark.parametrize(
    ("resource", "label"),
    [
        (condition(SNOMED, "7200002"), "ETH"),  # alcoholism
        (condition(ICD10, "F11.20"), "ETH"),  # opioid dependence, by ICD-10-CM range
        (condition(ICD10, "F32.9"), "PSY"),  # depression
        (condition(ICD10, "B20"), "HIV"),
        (condition(SNOMED, "72892002"), "SEX"),  # pregnancy
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "7917-8"}]},
            },
            "HIV",
        ),
        (
            {
                "resourceType": "MedicationRequest",
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "328670"}]},
            },
            "PSY",
        ),
        (
            {
                "resourceType": "ExplanationOfBenefit",
                "item": [{"productOrService": {"coding": [{"system": RXNORM, "code": "6813"}]}}],
            },
            "ETH",
        ),
    ],
)
def test_a_sensitive_code_earns_its_label_and_restricted_confidentiality(
    resource: dict[str, Any], label: str
) -> None:
    assert apply_security_labels(resource) is True
    assert {(ACT_CODE, label), (CONFIDENTIALITY, "R")} <= labels_of(resource)


def test_ordinary_content_is_left_exactly_as_it_was() -> None:
    resource = condition(SNOMED, "44054006")  # diabetes
    before = copy.deepcopy(resource)
    assert apply_security_labels(resource) is False
    assert resource == before


def test_labelling_is_idempotent_and_keeps_labels_already_there() -> None:
    resource = condition(SNOMED, "47505003")  # PTSD
    resource["meta"] = {"security": [{"system": "urn:other", "code": "KEEP"}]}
    apply_security_labels(resource)
    once = copy.deepcopy(resource)
    assert apply_security_labels(resource) is False
    assert resource == once
    assert ("urn:other", "KEEP") in labels_of(resource)


def test_the_same_code_in_another_system_is_not_sensitive() -> None:
    assert sensitivity_labels(condition("http://example.org/local", "7200002")) == set()


def test_the_rule_table_is_identified_by_a_digest() -> None:
    table = rules()
    assert len(table.digest) == 16 and table.exact
