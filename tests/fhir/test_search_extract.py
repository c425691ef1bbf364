"""Index extraction: what a resource is found by, per search-parameter type (R4 search.html)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from healthmesh.fhir.search.extract import EARLIEST, LATEST, IndexRows, canonical, extract
from healthmesh.fhir.search.normalize import normalize
from healthmesh.fhir.search.registry import indexed_params, split_union

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "meta": {"tag": [{"system": "urn:tags", "code": "t1"}], "profile": ["http://example.org/p"]},
    "identifier": [
        {
            "system": "urn:lab",
            "value": "42",
            "type": {"coding": [{"system": "urn:types", "code": "LAB"}]},
        }
    ],
    "status": "final",
    "category": [{"coding": [{"system": "urn:cat", "code": "vital-signs"}]}],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
        "text": "Pulse",
    },
    "subject": {"reference": "Patient/p1"},
    "performer": [
        {"reference": "https://other.example/fhir/Practitioner/x9"},
        {"identifier": {"system": "urn:npi", "value": "123"}},
    ],
    "effectivePeriod": {"start": "2024-03-01", "end": "2024-03-02T10:00:00Z"},
    "valueQuantity": {
        "value": 100,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    },
}


def rows_of(rows: list[Any], param: str) -> list[Any]:
    return [r[1:] for r in rows if r[0] == param]


@pytest.fixture(scope="module")
def obs() -> IndexRows:
    return extract(OBSERVATION)


def test_codeable_concept_gives_each_coding_and_its_text(obs: IndexRows) -> None:
    assert rows_of(obs.token, "code") == [
        ("http://loinc.org", "8867-4", "heart rate"),
        (None, None, "pulse"),
    ]


def test_code_primitive_is_a_token_without_system(obs: IndexRows) -> None:
    assert rows_of(obs.token, "status") == [(None, "final", None)]


def test_identifier_gives_system_value_and_of_type_rows(obs: IndexRows) -> None:
    assert rows_of(obs.token, "identifier") == [("urn:lab", "42", None)]
    assert rows_of(obs.token, "identifier:of-type") == [("urn:types", "LAB|42", None)]


def test_meta_tag_and_profile_are_indexed_for_every_type(obs: IndexRows) -> None:
    assert rows_of(obs.token, "_tag") == [("urn:tags", "t1", None)]
    assert rows_of(obs.uri, "_profile") == [("http://example.org/p",)]


def test_references_local_absolute_and_by_identifier(obs: IndexRows) -> None:
    assert ("Patient", "p1", None) in rows_of(obs.reference, "subject")
    assert ("Patient", "p1", None) in rows_of(obs.reference, "patient")
    performers = rows_of(obs.reference, "performer")
    assert performers == [("Practitioner", "x9", "https://other.example/fhir/Practitioner/x9")]
    assert rows_of(obs.token, "performer:identifier") == [("urn:npi", "123", None)]


def test_period_covers_start_to_end_at_their_precision(obs: IndexRows) -> None:
    ((low, high),) = rows_of(obs.date, "date")
    assert low == datetime(2024, 3, 1, tzinfo=UTC)
    assert high == datetime(2024, 3, 2, 10, 0, 1, tzinfo=UTC)


def test_open_period_extends_to_the_ends_of_time() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"code": "AMB"},
        "period": {"start": "2024"},
    }
    assert rows_of(extract(encounter).date, "date") == [(datetime(2024, 1, 1, tzinfo=UTC), LATEST)]
    assert EARLIEST < LATEST


def test_quantity_keeps_units_and_a_ucum_canonical_value(obs: IndexRows) -> None:
    ((value, system, code, unit, canon_value, canon_code),) = rows_of(
        obs.quantity, "value-quantity"
    )
    assert (value, system, code, unit) == (
        Decimal(100),
        "http://unitsofmeasure.org",
        "mg/dL",
        "mg/dL",
    )
    grams_per_litre = canonical(Decimal(1), "http://unitsofmeasure.org", "g/L")
    assert (canon_value, canon_code) == grams_per_litre  # 100 mg/dL == 1 g/L


def test_non_ucum_quantity_has_no_canonical_form() -> None:
    assert canonical(Decimal(1), "urn:other", "mg") == (None, None)


def test_human_name_and_address_parts_are_normalised_strings() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Muñoz", "given": ["José", "María"]}],
        "address": [{"line": ["1 Élysée Rd"], "city": "Zürich"}],
    }
    rows = extract(patient)
    assert rows_of(rows.string, "family") == [("munoz", "Muñoz")]
    assert ("jose", "José") in rows_of(rows.string, "given")
    assert ("zurich", "Zürich") in rows_of(rows.string, "address-city")
    assert ("1 elysee rd", "1 Élysée Rd") in rows_of(rows.string, "address")


def test_boolean_and_contact_point_tokens() -> None:
    patient = {
        "resourceType": "Patient",
        "active": True,
        "telecom": [{"system": "phone", "value": "555-0100"}],
    }
    rows = extract(patient)
    assert rows_of(rows.token, "active") == [(None, "true", None)]
    assert rows_of(rows.token, "telecom") == [("phone", "555-0100", None)]
    assert rows_of(rows.token, "phone") == [("phone", "555-0100", None)]


def test_number_parameters() -> None:
    risk = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "prediction": [{"probabilityDecimal": 0.25}],
    }
    assert rows_of(extract(risk).number, "probability") == [(Decimal("0.25"),)]


def test_union_definitions_are_pruned_to_the_indexed_type() -> None:
    expressions = {p.code: p.path.expression for p in indexed_params("Observation")}
    assert expressions["patient"] == "Observation.subject.where(resolve() is Patient)"


def test_split_union_respects_parentheses_and_strings() -> None:
    assert split_union("a | (b | c) | d.where(x = '|')") == ["a", "(b | c)", "d.where(x = '|')"]


def test_normalize_folds_case_accents_and_spacing() -> None:
    assert normalize("  ÅSA   Öberg ") == "asa oberg"
