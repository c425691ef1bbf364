"""The search oracle itself, on tiny hand-made resources whose answers were worked out by
hand from R4 search.html (its own examples where it has them). No database, no ../shared."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from search_oracle import Expected, Oracle, OracleError

BASE = "http://server.example/fhir"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **extra}


def observation(oid: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
    }
    body.update(extra)
    return body


def qty(value: float, code: str = "mg", system: str = UCUM) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": system, "code": code}


def oracle(*resources: dict[str, Any]) -> Oracle:
    return Oracle(resources, base=BASE, now=NOW)


# --- date: the prefix table of search.html, on ranges ----------------------------------------

# Search value 2013-01-14 is the range [14th, 15th). The targets' ranges (UTC):
DATED = oracle(
    observation("A", effectiveDateTime="2013-01-14T10:00:00Z"),  # one second on the 14th
    observation("B", effectiveDateTime="2013-01-13"),  # the day before
    observation("C", effectiveDateTime="2013-01-15"),  # the day after
    observation("D", effectiveDateTime="2013-01"),  # the month around it
    observation("E", effectivePeriod={"start": "2013-01-14T23:00:00Z"}),  # open, to forever
    observation("F", effectivePeriod={"start": "2013-01-10", "end": "2013-01-12"}),
    observation("G"),  # no date at all
)


@pytest.mark.parametrize(
    ("prefix", "certain"),
    [
        ("eq", "A"),  # the search range contains the target range
        ("ne", "BCDEF"),
        ("gt", "CDE"),  # the range above the search value intersects the target
        ("lt", "BDF"),  # the range below intersects the target
        ("ge", "ACDE"),
        ("le", "ABDF"),
        ("sa", "C"),  # the target starts after the search range ends
        ("eb", "BF"),  # the target ends before the search range starts
        ("ap", "ADE"),  # the ranges overlap
    ],
)
def test_each_date_prefix_compares_ranges_as_the_prefix_table_says(
    prefix: str, certain: str
) -> None:
    expected = DATED.expect("Observation", [("date", f"{prefix}2013-01-14")])
    assert sorted(expected.certain) == list(certain)
    if prefix != "ap":
        assert expected.exact


def test_approximately_also_allows_dates_within_a_tenth_of_the_gap_to_now() -> None:
    expected = DATED.expect("Observation", [("date", "ap2013-01-14")])
    # 13 years ago: ±1.3 years may count as approximately the same.
    assert expected.possible == set("ABCDEF")


def test_birthdate_ge_includes_the_day_and_coarser_dates_reaching_past_it() -> None:
    o = oracle(
        patient("before", birthDate="2013-01-13"),
        patient("same", birthDate="2013-01-14"),
        patient("after", birthDate="2013-01-15"),
        patient("month", birthDate="2013-01"),
        patient("year", birthDate="2013"),
        patient("older", birthDate="2012"),
    )
    assert o.search("Patient", [("birthdate", "ge2013-01-14")]) == {
        "same",
        "after",
        "month",
        "year",
    }
    assert o.search("Patient", [("birthdate", "2013")]) == {
        "before",
        "same",
        "after",
        "month",
        "year",
    }


def test_a_date_without_prefix_is_eq_and_zones_move_the_instant() -> None:
    o = oracle(observation("x", effectiveDateTime="2013-01-14T23:30:00-05:00"))  # 15th, 04:30 Z
    assert o.search("Observation", [("date", "2013-01-15")]) == {"x"}
    assert o.search("Observation", [("date", "2013-01-14")]) == set()


def test_last_updated_is_read_from_meta() -> None:
    o = oracle(patient("p", meta={"lastUpdated": "2024-05-06T07:08:09.123Z"}), patient("q"))
    assert o.search("Patient", [("_lastUpdated", "2024-05-06T07:08:09.123Z")]) == {"p"}
    assert o.search("Patient", [("_lastUpdated", "gt2024-05-06T07:08:09.123Z")]) == set()
    assert o.search("Patient", [("_lastUpdated", "le2024-05")]) == {"p"}


# --- number and quantity: implicit precision ---------------------------------------------------

RISKS = oracle(
    *(
        {
            "resourceType": "RiskAssessment",
            "id": rid,
            "status": "final",
            "subject": {"reference": "Patient/p"},
            "prediction": [{"probabilityDecimal": p}],
        }
        for rid, p in (
            ("r99.4", 99.4),
            ("r99.5", 99.5),
            ("r100", 100),
            ("r100.004", 100.004),
            ("r100.5", 100.5),
            ("r60", 60),
            ("r96", 96),
        )
    )
)


@pytest.mark.parametrize(
    ("value", "certain"),
    [
        ("100", {"r99.5", "r100", "r100.004"}),  # [99.5, 100.5)
        ("100.00", {"r100", "r100.004"}),  # [99.995, 100.005)
        ("lt100", {"r99.4", "r99.5", "r60", "r96"}),  # exactly below 100
        ("le100", {"r99.4", "r99.5", "r60", "r96", "r100"}),
        ("gt100", {"r100.004", "r100.5"}),
        ("ge100", {"r100", "r100.004", "r100.5"}),
        ("ne100", {"r99.4", "r100.5", "r60", "r96"}),
        ("sa100", {"r100.004", "r100.5"}),
        ("eb100", {"r99.4", "r99.5", "r60", "r96"}),
    ],
)
def test_number_search_uses_the_precision_of_the_value_written(
    value: str, certain: set[str]
) -> None:
    expected = RISKS.expect("RiskAssessment", [("probability", value)])
    assert expected == Expected(frozenset(certain), frozenset(certain))


def test_exponent_numbers_match_certainly_near_and_possibly_within_their_significant_figure() -> (
    None
):
    expected = RISKS.expect("RiskAssessment", [("probability", "1e2")])
    # search.html's own example says [95, 105); one significant figure says [50, 150).
    assert expected.certain == {"r99.4", "r99.5", "r100", "r100.004", "r100.5", "r96"}
    assert expected.possible == expected.certain | {"r60"}


def test_approximately_a_number_is_certain_in_range_and_possible_within_ten_percent() -> None:
    expected = RISKS.expect("RiskAssessment", [("probability", "ap100")])
    assert expected.certain == {"r99.5", "r100", "r100.004"}
    assert expected.possible == expected.certain | {"r99.4", "r100.5", "r96"}


QUANTITIES = oracle(
    observation("mg5.4", valueQuantity=qty(5.4)),
    observation("mg5.35", valueQuantity=qty(5.35)),
    observation("mg5.45", valueQuantity=qty(5.45)),
    observation("g", valueQuantity=qty(0.0054, "g")),
    observation("other-system", valueQuantity=qty(5.4, "mg", "http://example.org/units")),
    observation("unit-only", valueQuantity={"value": 5.4, "unit": "mg"}),
    observation("per-min", valueQuantity=qty(5.4, "/min")),
)


def test_quantity_with_system_and_code_matches_those_units_within_precision() -> None:
    expected = QUANTITIES.expect("Observation", [("value-quantity", f"5.4|{UCUM}|mg")])
    assert expected.certain == {"mg5.4", "mg5.35"}  # [5.35, 5.45)
    assert expected.possible == {"mg5.4", "mg5.35", "g"}  # 5.4 mg after unit conversion


def test_quantity_without_system_matches_the_code_or_the_unit() -> None:
    found = QUANTITIES.search("Observation", [("value-quantity", "5.4||mg")])
    assert found == {"mg5.4", "mg5.35", "other-system", "unit-only"}


def test_quantity_value_alone_ignores_units() -> None:
    found = QUANTITIES.search("Observation", [("value-quantity", "5.4")])
    assert found == {"mg5.4", "mg5.35", "other-system", "unit-only", "per-min"}


def test_quantity_prefix_compares_the_exact_value() -> None:
    found = QUANTITIES.search("Observation", [("value-quantity", f"gt5.4|{UCUM}|mg")])
    assert found == {"mg5.45"}


# --- string --------------------------------------------------------------------------------------

NAMED = oracle(
    patient("eve", name=[{"family": "Everywoman", "given": ["Eve"]}]),
    patient("evelyn", name=[{"given": ["Evelyn"]}]),
    patient("lower", name=[{"given": ["eve"]}]),
    patient("accent", name=[{"given": ["Ève"]}]),
    patient("steve", name=[{"given": ["Steve"]}]),
    patient("addressed", address=[{"line": ["534 Erewhon St"], "city": "PleasantVille"}]),
)


def test_string_matches_the_start_ignoring_case_and_accents() -> None:
    assert NAMED.search("Patient", [("given", "eve")]) == {"eve", "evelyn", "lower", "accent"}
    assert NAMED.search("Patient", [("name", "EVERY")]) == {"eve"}


def test_exact_string_matches_the_whole_value_with_case_and_accents() -> None:
    assert NAMED.search("Patient", [("given:exact", "Eve")]) == {"eve"}


def test_contains_string_matches_anywhere() -> None:
    found = NAMED.search("Patient", [("given:contains", "eve")])
    assert found == {"eve", "evelyn", "lower", "accent", "steve"}
    assert NAMED.search("Patient", [("address:contains", "erewhon")]) == {"addressed"}
    assert NAMED.search("Patient", [("address", "erewhon")]) == set()
    assert NAMED.search("Patient", [("address-city", "pleasant")]) == {"addressed"}


def test_string_missing_means_no_value_at_all() -> None:
    assert NAMED.search("Patient", [("family:missing", "true")]) == {
        "evelyn",
        "lower",
        "accent",
        "steve",
        "addressed",
    }


# --- token ---------------------------------------------------------------------------------------

TOKENS = oracle(
    patient(
        "acme",
        identifier=[
            {
                "system": "http://acme.org/patient",
                "value": "2345",
                "type": {"coding": [{"system": V2, "code": "MR"}], "text": "Medical record"},
            }
        ],
        gender="male",
        active=True,
        telecom=[{"system": "phone", "value": "(03) 5555 6473"}],
    ),
    patient("no-system", identifier=[{"value": "2345"}], gender="female", active=False),
    patient("other", identifier=[{"system": "http://other.org", "value": "2345"}]),
    patient("nothing"),
)


@pytest.mark.parametrize(
    ("value", "certain"),
    [
        ("http://acme.org/patient|2345", {"acme"}),
        ("2345", {"acme", "no-system", "other"}),
        ("|2345", {"no-system"}),
        ("http://acme.org/patient|", {"acme"}),
        ("http://acme.org/patient|9999", set()),
    ],
)
def test_identifier_token_forms(value: str, certain: set[str]) -> None:
    assert TOKENS.expect("Patient", [("identifier", value)]).certain == certain


def test_of_type_matches_identifier_type_and_value() -> None:
    assert TOKENS.search("Patient", [("identifier:of-type", f"{V2}|MR|2345")]) == {"acme"}
    assert TOKENS.search("Patient", [("identifier:of-type", f"{V2}|DL|2345")]) == set()


def test_not_returns_resources_without_a_matching_value_including_those_without_any() -> None:
    assert TOKENS.search("Patient", [("gender:not", "male")]) == {"no-system", "other", "nothing"}


def test_not_with_alternatives_is_certain_only_where_no_alternative_matches() -> None:
    # "not (male or female)"; reading it as "not male, or not female" would add both.
    expected = TOKENS.expect("Patient", [("gender:not", "male,female")])
    assert expected.certain == {"other", "nothing"}
    assert expected.possible == {"acme", "no-system", "other", "nothing"}


def test_booleans_are_the_tokens_true_and_false() -> None:
    assert TOKENS.search("Patient", [("active", "true")]) == {"acme"}
    assert TOKENS.search("Patient", [("active", "false")]) == {"no-system"}


def test_text_searches_the_identifier_type_text() -> None:
    assert TOKENS.search("Patient", [("identifier:text", "medical")]) == {"acme"}


def test_code_in_another_case_and_system_on_a_code_element_are_only_possible() -> None:
    upper = TOKENS.expect("Patient", [("gender", "MALE")])
    assert upper.certain == set() and upper.possible == {"acme"}
    with_system = TOKENS.expect(
        "Patient", [("gender", "http://hl7.org/fhir/administrative-gender|male")]
    )
    assert with_system.certain == set() and with_system.possible == {"acme"}


def test_contact_point_tokens_match_the_value() -> None:
    assert TOKENS.search("Patient", [("phone", "(03) 5555 6473")]) == {"acme"}
    assert TOKENS.expect("Patient", [("phone", "0355556473")]).possible == {"acme"}


def test_codeable_concepts_match_any_coding_and_text_matches_display_or_text() -> None:
    o = oracle(
        observation(
            "two",
            code={
                "coding": [
                    {"system": LOINC, "code": "8480-6", "display": "Systolic"},
                    {"system": "http://snomed.info/sct", "code": "271649006"},
                ],
                "text": "Blood pressure",
            },
        ),
        observation("weight"),
    )
    assert o.search("Observation", [("code", "271649006")]) == {"two"}
    assert o.search("Observation", [("code", f"{LOINC}|")]) == {"two", "weight"}
    assert o.search("Observation", [("code:text", "systo")]) == {"two"}
    assert o.search("Observation", [("code:text", "blood")]) == {"two"}
    assert o.search("Observation", [("code:text", "pressure")]) == set()


# --- reference -----------------------------------------------------------------------------------

REFS = oracle(
    patient("p1"),
    patient("p2"),
    {"resourceType": "Group", "id": "p1", "type": "person", "actual": True},
    observation("local", subject={"reference": "Patient/p1"}),
    observation("absolute", subject={"reference": f"{BASE}/Patient/p1"}),
    observation("group", subject={"reference": "Group/p1"}),
    observation("elsewhere", subject={"reference": "http://other.example/fhir/Patient/p1"}),
    observation("p2", subject={"reference": "Patient/p2"}),
    observation(
        "by-identifier",
        subject={"identifier": {"system": "urn:mrn", "value": "7"}, "display": "Someone"},
    ),
    observation("none"),
    observation("wrong-type", encounter={"reference": "Patient/p1"}),
)


@pytest.mark.parametrize(
    ("name", "value", "certain"),
    [
        ("subject", "Patient/p1", {"local", "absolute"}),
        ("subject", "p1", {"local", "absolute", "group"}),  # any allowed type with that id
        ("subject:Patient", "p1", {"local", "absolute"}),
        ("subject", f"{BASE}/Patient/p1", {"local", "absolute"}),
        ("subject", "http://other.example/fhir/Patient/p1", {"elsewhere"}),
        ("patient", "p1", {"local", "absolute"}),
        ("subject:identifier", "urn:mrn|7", {"by-identifier"}),
        ("subject", "Patient/p1,Patient/p2", {"local", "absolute", "p2"}),
        ("subject:missing", "true", {"none", "wrong-type"}),
        ("encounter", "p1", set()),  # a bare id only names the parameter's target types
    ],
)
def test_reference_forms(name: str, value: str, certain: set[str]) -> None:
    assert REFS.expect("Observation", [(name, value)]).certain == certain


# --- composite, chains, _has -----------------------------------------------------------------


def bp(oid: str, systolic: int, diastolic: int, subject: str) -> dict[str, Any]:
    def part(code: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": qty(value, "mm[Hg]"),
        }

    return observation(
        oid,
        code={"coding": [{"system": LOINC, "code": "85354-9"}]},
        component=[part("8480-6", systolic), part("8462-4", diastolic)],
        subject={"reference": subject},
    )


WORLD = oracle(
    {
        "resourceType": "Practitioner",
        "id": "doc",
        "name": [{"family": "Van Helsing"}],
    },
    patient(
        "peter",
        name=[{"family": "Chalmers", "given": ["Peter"]}],
        generalPractitioner=[{"reference": "Practitioner/doc"}],
    ),
    patient("eve", name=[{"given": ["Eve"]}], birthDate="2013-01-14"),
    bp("high", 150, 95, "Patient/peter"),
    bp("low", 95, 60, "Patient/eve"),
    observation("weight", valueQuantity=qty(5.4), subject={"reference": "Patient/eve"}),
    {
        "resourceType": "Provenance",
        "id": "prov",
        "target": [{"reference": "Observation/high"}],
        "recorded": "2020-01-01T00:00:00Z",
        "agent": [{"who": {"reference": "Practitioner/doc"}}],
    },
)


def test_composite_components_must_match_on_the_same_component() -> None:
    systolic_below_100 = [("component-code-value-quantity", f"{LOINC}|8480-6$lt100")]
    assert WORLD.search("Observation", systolic_below_100) == {"low"}
    # "high" has a value below 100 (diastolic 95), but not on its systolic component.
    diastolic_90s = [("component-code-value-quantity", f"{LOINC}|8462-4$ge90")]
    assert WORLD.search("Observation", diastolic_90s) == {"high"}
    weight = [("code-value-quantity", f"{LOINC}|29463-7$5.4|{UCUM}|mg")]
    assert WORLD.search("Observation", weight) == {"weight"}


def test_chains_follow_references_one_and_two_levels() -> None:
    assert WORLD.search("Observation", [("subject:Patient.name", "peter")]) == {"high"}
    assert WORLD.search("Observation", [("subject.birthdate", "2013-01-14")]) == {"low", "weight"}
    two_levels = [("subject:Patient.general-practitioner.name", "van")]
    assert WORLD.search("Observation", two_levels) == {"high"}


def test_has_selects_resources_referenced_by_matching_ones() -> None:
    assert WORLD.search("Patient", [("_has:Observation:patient:code", "29463-7")]) == {"eve"}
    nested = [("_has:Observation:subject:_has:Provenance:target:agent", "Practitioner/doc")]
    assert WORLD.search("Patient", nested) == {"peter"}


def test_comma_is_or_and_repetition_is_and() -> None:
    assert WORLD.search("Patient", [("name", "peter,eve")]) == {"peter", "eve"}
    assert WORLD.search("Patient", [("name", "peter"), ("name", "eve")]) == set()


def test_escaped_commas_are_part_of_the_value() -> None:
    o = oracle(
        patient("comma", name=[{"family": "Smith, Jr"}]),
        patient("smith", name=[{"family": "Smith"}]),
    )
    assert o.search("Patient", [("family", "smith\\, jr")]) == {"comma"}
    assert o.search("Patient", [("family", "smith,jr")]) == {"comma", "smith"}


# --- _include / _revinclude -------------------------------------------------------------------


def test_include_adds_referenced_resources_and_iterate_follows_them() -> None:
    params = [("_id", "high"), ("_include", "Observation:subject")]
    assert WORLD.includes("Observation", params) == {"Patient/peter"}
    typed = [("_id", "high"), ("_include", "Observation:subject:Group")]
    assert WORLD.includes("Observation", typed) == set()
    iterate = [*params, ("_include:iterate", "Patient:general-practitioner")]
    assert WORLD.includes("Observation", iterate) == {"Patient/peter", "Practitioner/doc"}
    not_iterated = [*params, ("_include", "Patient:general-practitioner")]
    assert WORLD.includes("Observation", not_iterated) == {"Patient/peter"}


def test_revinclude_adds_resources_that_point_at_the_matches() -> None:
    params = [("_id", "peter"), ("_revinclude", "Observation:subject")]
    assert WORLD.includes("Patient", params) == {"Observation/high"}
    chained = [*params, ("_revinclude:iterate", "Provenance:target")]
    assert WORLD.includes("Patient", chained) == {"Observation/high", "Provenance/prov"}


def test_wildcard_include_follows_every_reference_parameter() -> None:
    assert WORLD.includes("Observation", [("_id", "weight"), ("_include", "Observation:*")]) == {
        "Patient/eve"
    }


# --- uri and common parameters ----------------------------------------------------------------


def test_uri_below_and_above_compare_by_path() -> None:
    o = oracle(
        *(
            {"resourceType": "ValueSet", "id": vid, "status": "active", "url": url}
            for vid, url in (
                ("vs123", "http://acme.org/fhir/ValueSet/123"),
                ("root", "http://acme.org/fhir/"),
                ("sibling", "http://acme.org/fhirother/ValueSet/9"),
            )
        )
    )
    assert o.search("ValueSet", [("url", "http://acme.org/fhir/ValueSet/123")]) == {"vs123"}
    assert o.search("ValueSet", [("url:below", "http://acme.org/fhir/")]) == {"vs123", "root"}
    above = [("url:above", "http://acme.org/fhir/ValueSet/123/_history/5")]
    assert o.search("ValueSet", above) == {"vs123", "root"}


def test_common_parameters_read_meta() -> None:
    o = oracle(
        patient(
            "p",
            meta={
                "tag": [{"system": "urn:tags", "code": "t"}],
                "profile": ["http://example.org/StructureDefinition/x"],
                "source": "urn:source",
            },
        ),
        patient("q"),
    )
    assert o.search("Patient", [("_tag", "urn:tags|t")]) == {"p"}
    assert o.search("Patient", [("_profile", "http://example.org/StructureDefinition/x")]) == {"p"}
    assert o.search("Patient", [("_source", "urn:source")]) == {"p"}
    assert o.search("Patient", [("_id", "q,nope")]) == {"q"}


# --- the oracle's own contract ------------------------------------------------------------------


def test_unknown_parameters_and_bad_values_are_refused() -> None:
    o = oracle(patient("p"))
    for params in (
        [("shoe-size", "9")],
        [("birthdate", "yesterday")],
        [("gender:in", "http://example.org/vs")],
        [("name:missing", "maybe")],
    ):
        with pytest.raises(OracleError):
            o.expect("Patient", params)


def test_expected_admits_answers_between_certain_and_possible() -> None:
    expected = Expected(frozenset({"a"}), frozenset({"a", "b"}))
    assert expected.admits({"a"}) and expected.admits({"a", "b"})
    assert not expected.admits({"b"}) and not expected.admits({"a", "c"})
