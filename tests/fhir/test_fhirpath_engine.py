"""Focused tests of the FHIRPath engine (healthmesh.fhir.fhirpath); no ../shared data needed."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from healthmesh.fhir import fhirpath
from healthmesh.fhir.fhirpath import (
    FhirPathError,
    FhirPathEvaluationError,
    FhirPathSyntaxError,
    Quantity,
    Temporal,
)

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "gender": "female",
    "birthDate": "1974-12-25",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00",
            }
        ]
    },
    "extension": [
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {
                    "url": "ombCategory",
                    "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3"},
                },
                {"url": "text", "valueString": "White"},
            ],
        },
        {"url": "http://example.org/flag", "valueBoolean": False},
    ],
    "name": [
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
        {"use": "maiden", "family": "Windsor", "given": [None, "Jane"], "_given": [{"id": "g1"}]},
    ],
    "telecom": [
        {"system": "phone", "value": "555-1234", "use": "home"},
        {"system": "email", "value": "p@example.org"},
    ],
    "deceasedBoolean": False,
    "contact": [{"relationship": [{"text": "Mother"}], "name": {"family": "Chalmers"}}],
    "managingOrganization": {"reference": "Organization/org1"},
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "performer": [{"reference": "Practitioner/dr1"}, {"reference": "Patient/p1"}],
    "effectiveDateTime": "2024-03-01T10:30:00+01:00",
    "valueQuantity": {
        "value": 185,
        "unit": "lbs",
        "system": "http://unitsofmeasure.org",
        "code": "[lb_av]",
    },
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {
                "value": 120,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        },
        {"code": {"text": "note"}, "valueString": "seated"},
    ],
}


def ev(expression: str, resource: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
    return fhirpath.evaluate(PATIENT if resource is None else resource, expression, **kwargs)


# -- parsing and precedence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", [7]),
        ("(1 + 2) * 3", [9]),
        ("10 - 4 - 3", [3]),  # left associative
        ("2 * 3 + 4 = 10", [True]),
        ("-2 * 3", [-6]),
        ("-Patient.name.given.count()", [-5]),
        ("(1 | 1 is Integer).count()", [2]),  # 'is' binds tighter than '|'
        ("true and '0215' in ('0215' | '0216')", [True]),  # 'in' binds tighter than 'and'
        ("false or true and false", [False]),  # 'and' binds tighter than 'or'
        ("true xor true or true", [True]),
        ("false implies false or false", [True]),  # 'implies' is loosest
        ("1 < 2 = true", [True]),  # comparison binds tighter than equality
        ("'a' & 'b' + 'c' = 'abc'", [True]),
        ("5 div 2 * 2 + 5 mod 2", [5]),
        ("Patient.name[1].given", ["Jim"]),
        ("`Patient`.name.`given`.first()", ["Peter"]),
        ("2 + /* inline */ 2 // trailing", [4]),
    ],
)
def test_precedence(expression: str, expected: list[Any]) -> None:
    assert ev(expression) == expected


def test_unary_minus_applies_after_invocation() -> None:
    # -1.convertsToInteger() is -(1.convertsToInteger()), i.e. minus a Boolean: an error.
    with pytest.raises(FhirPathEvaluationError):
        ev("-1.convertsToInteger()")
    assert ev("(-1).convertsToInteger()") == [True]


def test_literals() -> None:
    assert ev("1.50") == [Decimal("1.50")]
    assert ev("'it''s'" if False else r"'it\'s \u0041'") == ["it's A"]
    (date,) = ev("@2015-02")
    assert isinstance(date, Temporal)
    assert date.kind == "Date"
    assert date.literal() == "@2015-02"
    assert ev("@2015-02-04T14:34:28.123+10:00")[0].literal() == "@2015-02-04T14:34:28.123+10:00"
    assert ev("@T14:34")[0].kind == "Time"
    assert ev("4 days") == [Quantity(Decimal(4), "days")]
    assert ev("10.5 'mg'") == [Quantity(Decimal("10.5"), "mg")]
    assert ev("{}") == []


@pytest.mark.parametrize(
    ("expression", "position", "snippet"),
    [
        ("2 + 2 /", 7, "end of expression"),
        ("Patient.name.", 13, "identifier"),
        ("Patient..name", 8, "identifier"),
        ("name.where(use = 'x'", 20, "')'"),
        ("1 +* 2", 3, "Unexpected"),
        ("'unterminated", 0, "Unexpected character"),
        ("2 + 2 /* open", 6, "Unterminated comment"),
        ("@2015-13-01", 0, "Invalid date"),
        ("name.given.nosuchfunction()", 11, "Unknown function"),
        ("name.first(1)", 5, "expects 0"),
        ("Patient.name.where()", 13, "expects 1"),
        ("name and or", 9, "Unexpected keyword"),
        ("", 0, "Empty expression"),
        ("Patient\n  .name\n  .x $", 21, "line 3, column 6"),
    ],
)
def test_syntax_error_positions(expression: str, position: int, snippet: str) -> None:
    with pytest.raises(FhirPathSyntaxError) as info:
        fhirpath.compile(expression)
    assert info.value.position == position
    assert snippet in str(info.value)
    assert isinstance(info.value, ValueError)


def test_compile_is_cached_by_text() -> None:
    first = fhirpath.compile("Patient.name.family")
    assert fhirpath.compile("Patient.name.family") is first
    assert first.evaluate(PATIENT) == ["Chalmers", "Windsor"]


# -- collections and empty propagation --------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.nothing",
        "Patient.nothing + 1",
        "{} = 1",
        "1 != {}",
        "{} < 2",
        "Patient.nothing.substring(1)",
        "{}.upper()",
        "Patient.nothing.first()",
        "-{}",
        "{} * 2",
    ],
)
def test_empty_propagates(expression: str) -> None:
    assert ev(expression) == []


def test_collections() -> None:
    assert ev("Patient.name.given") == ["Peter", "James", "Jim", "Jane"]
    assert ev("(1 | 2 | 2 | 3).count()") == [3]  # union removes duplicates
    assert ev("(1 | 2).combine(2).count()") == [3]  # combine keeps them
    # The value-less given (it only has an id) is still a node of the collection.
    assert ev("Patient.name.given.distinct().count()") == [5]
    assert ev("(1 | 2 | 3).exclude(2)") == [1, 3]
    assert ev("(1 | 2 | 3).intersect(2 | 3 | 4)") == [2, 3]
    assert ev("Patient.name.skip(1).take(1).use") == ["usual"]
    assert ev("Patient.name.last().family") == ["Windsor"]
    assert ev("Patient.name.tail().count()") == [2]
    # The maiden name's first given has no value (only an id): evaluate() leaves it out.
    assert ev("Patient.name.select(given.first())") == ["Peter", "Jim"]
    assert ev("Patient.telecom.select($index)") == [0, 1]
    assert ev("(1 | 2 | 3).aggregate($this + $total, 0)") == [6]
    assert ev("(3 | 1 | 2).sort()") == [1, 2, 3]
    assert ev("Patient.name.sort(-family).first().use") == ["usual"]  # empty keys sort first


def test_singleton_errors() -> None:
    with pytest.raises(FhirPathEvaluationError, match="single"):
        ev("Patient.name.given + 'x'")
    with pytest.raises(FhirPathEvaluationError):
        ev("Patient.name.single()")
    with pytest.raises(FhirPathEvaluationError):
        ev("(1 | 2) < 3")


# -- three-valued logic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "and_", "or_", "xor", "implies"),
    [
        ("true", "true", [True], [True], [False], [True]),
        ("true", "false", [False], [True], [True], [False]),
        ("true", "{}", [], [True], [], []),
        ("false", "true", [False], [True], [True], [True]),
        ("false", "false", [False], [False], [False], [True]),
        ("false", "{}", [False], [], [], [True]),
        ("{}", "true", [], [True], [], [True]),
        ("{}", "false", [False], [], [], []),
        ("{}", "{}", [], [], [], []),
    ],
)
def test_three_valued_logic(
    left: str,
    right: str,
    and_: list[bool],
    or_: list[bool],
    xor: list[bool],
    implies: list[bool],
) -> None:
    assert ev(f"({left}) and ({right})") == and_
    assert ev(f"({left}) or ({right})") == or_
    assert ev(f"({left}) xor ({right})") == xor
    assert ev(f"({left}) implies ({right})") == implies


def test_not_and_boolean_singletons() -> None:
    assert ev("true.not()") == [False]
    assert ev("{}.not()") == []
    assert ev("Patient.active.not()") == [False]
    assert ev("Patient.active and Patient.gender = 'female'") == [True]
    with pytest.raises(FhirPathEvaluationError):
        ev("Patient.name.given and true")


def test_short_circuit_keeps_three_valued_results() -> None:
    # The right side is not needed once the left decides, so its error is not raised.
    assert ev("false and (1 | 2).single() = 1") == [False]
    assert ev("true or (1 | 2).single() = 1") == [True]


# -- equality and equivalence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'a' = 'A'", [False]),
        ("'a' ~ 'A'", [True]),
        ("'a  b ' ~ 'A B'", [True]),  # whitespace normalised for ~
        ("1.10 = 1.1", [True]),
        ("1 = 1.0", [True]),
        ("1.2 / 1.8 = 0.67", [False]),
        ("1.2 / 1.8 ~ 0.67", [True]),  # rounded to the least precise operand
        ("{} = {}", []),
        ("{} ~ {}", [True]),
        ("1 ~ {}", [False]),
        ("(1 | 2) = (2 | 1)", [False]),  # = is ordered
        ("(1 | 2) ~ (2 | 1)", [True]),  # ~ is not
        ("true = 1", [False]),  # no implicit Boolean/Integer conversion
        ("Patient.name.first() = Patient.name.first()", [True]),
        ("Patient.name.first() = Patient.name.last()", [False]),
        ("Patient.gender = 'female'", [True]),
        ("Patient.gender != 'male'", [True]),
        ("Patient.gender ~ 'FEMALE'", [True]),
    ],
)
def test_equality_vs_equivalence(expression: str, expected: list[Any]) -> None:
    assert ev(expression) == expected


# -- dates with partial precision -----------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("@2012-04-15 = @2012-04-15", [True]),
        ("@2012-04 = @2012-04-15", []),  # different precision: unknown
        ("@2012-04 ~ @2012-04-15", [False]),
        ("@2012-03 < @2012-04-15", [True]),  # decided before the precisions differ
        ("@2012-04 < @2012-04-15", []),
        ("@2012-04-15T10:00:00 = @2012-04-15T10:00:00.000", [True]),  # s and ms: one precision
        ("@2012-04-15T10:30 < @2012-04-15T10:30:00", []),
        ("@2017-11-05T01:30:00-04:00 = @2017-11-05T00:30:00-05:00", [True]),  # same instant
        ("@2017-11-05T01:30:00-04:00 > @2017-11-05T01:15:00-05:00", [False]),
        ("@2012-04-15T15:00:00Z = @2012-04-15T10:00:00", []),  # one without offset: unknown
        ("@2012-04-15 = @T10:00:00", [False]),
        ("Patient.birthDate = @1974-12-25", [True]),
        ("Patient.birthDate < @1975", [True]),
        ("Patient.birthDate >= @1974-12", []),
        ("@1973-12-25 + 7 days", ["@1974-01-01"]),
        ("@2014-01-31 + 1 month", ["@2014-02-28"]),
        ("@2016-02-29 + 1 year", ["@2017-02-28"]),
        ("@2014-01-01T10:00:00+02:00 + 90 minutes", ["@2014-01-01T11:30:00+02:00"]),
        ("@T23:30 + 1 hour", ["@T00:30"]),
        ("@1974-12-25 - 1 'wk'", ["@1974-12-18"]),
    ],
)
def test_dates(expression: str, expected: list[Any]) -> None:
    result = ev(expression)
    shown = [r.literal() if isinstance(r, Temporal) else r for r in result]
    assert shown == expected


def test_date_arithmetic_rejects_non_calendar_units() -> None:
    with pytest.raises(FhirPathEvaluationError):
        ev("@2014-01-01 + 1 'mo'")  # UCUM month is not a calendar month
    with pytest.raises(FhirPathEvaluationError):
        ev("@2014-01-01 + 1 'cm'")


def test_dates_from_data_compare_as_dates() -> None:
    assert ev("Observation.effective > @2024-03-01T09:00:00Z", OBSERVATION) == [True]
    assert ev("Observation.effective < @2024-03-01T09:00:00Z", OBSERVATION) == [False]
    assert ev("Observation.effective.is(dateTime)", OBSERVATION) == [True]


# -- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("4.0000 'g' = 4000.0 'mg'", [True]),
        ("1 'kg' > 999 'g'", [True]),
        ("7 days = 1 week", [True]),
        ("7 days = 1 'wk'", [True]),
        ("1 year = 1 'a'", []),  # calendar year vs UCUM year: not comparable
        ("1 'cm' = 1 's'", []),
        ("4 'g' ~ 4040 'mg'", [True]),
        ("2.0 'cm' * 2.0 'm' = 0.040 'm2'", [True]),
        ("4.0 'g' / 2.0 'm' = 2 'g/m'", [True]),
        ("1 '[in_i]' = 2.54 'cm'", [True]),
        ("1 'cm'.comparable(1 '[in_i]')", [True]),
        ("Observation.value = 185 '[lb_av]'", [True]),
        ("Observation.value > 80 'kg'", [True]),  # 185 lb is about 83.9 kg
        ("Observation.value < 84 'kg'", [True]),
        ("Observation.component.value.ofType(Quantity).where($this > 100 'mm[Hg]').value", [120]),
    ],
)
def test_quantities(expression: str, expected: list[Any]) -> None:
    assert ev(expression, OBSERVATION) == expected


def test_quantity_conversion_functions() -> None:
    assert ev("'5 mg'.toQuantity()") == []  # unquoted unit must be a calendar keyword
    assert ev("'5 \\'mg\\''.toQuantity('g')") == [Quantity(Decimal("0.005"), "g")]
    assert ev("1 'wk'.toString()") == ["1 'wk'"]
    assert ev("'1 day'.toQuantity() = 1 'd'") == [True]


# -- navigation, choice types and typing ------------------------------------------------------


def test_choice_elements() -> None:
    assert ev("Observation.value.unit", OBSERVATION) == ["lbs"]
    assert ev("Observation.value is Quantity", OBSERVATION) == [True]
    assert ev("Observation.value.is(Period)", OBSERVATION) == [False]
    assert ev("Observation.value.ofType(Quantity).code", OBSERVATION) == ["[lb_av]"]
    assert ev("Observation.component.value.ofType(string)", OBSERVATION) == ["seated"]
    assert ev("(Observation.effective as dateTime)", OBSERVATION) == ["2024-03-01T10:30:00+01:00"]
    assert ev("(Observation.effective as Period)", OBSERVATION) == []
    assert ev("Patient.deceased", PATIENT) == [False]


def test_as_filters_repeating_elements() -> None:
    """R4 search parameters apply 'as' to repeating elements (see docs/fhirpath.md)."""
    expected = [120, 80]
    values = ev("Observation.component.value.as(Quantity).value", OBSERVATION)
    assert values == expected
    assert ev("(Observation.component.value as Quantity).value", OBSERVATION) == expected
    union = "Observation.value.as(Quantity) | Observation.component.value.as(Quantity)"
    assert [q["value"] for q in ev(union, OBSERVATION)] == [185, 120, 80]
    with pytest.raises(FhirPathEvaluationError):
        ev("Observation.component.value.as(Quantity)", OBSERVATION, strict=True)


def test_types_and_inheritance() -> None:
    assert ev("Patient.gender.is(code)") == [True]
    assert ev("Patient.gender.is(string)") == [True]  # code derives from string
    assert ev("Patient.gender.as(string)") == []  # casts between primitives are exact
    assert ev("Patient.is(DomainResource)") == [True]
    assert ev("Patient.ofType(Resource).id") == ["p1"]
    assert ev("Patient.active.is(Boolean)") == [False]  # FHIR boolean is not System.Boolean
    assert ev("true.is(Boolean)") == [True]
    assert ev("Patient.type().name") == ["Patient"]
    assert ev("Patient.contact.type().name") == ["BackboneElement"]
    assert ev("1.type().namespace") == ["System"]
    extension_age = {
        "resourceType": "Observation",
        "extension": [{"url": "x", "valueAge": {"value": 3, "code": "a"}}],
    }
    assert ev("Observation.extension.value is Quantity", extension_age) == [True]
    with pytest.raises(FhirPathError, match="Unknown type"):
        fhirpath.compile("Patient.gender.as(string1)")


def test_evaluate_typed_exposes_fhir_types() -> None:
    nodes = fhirpath.evaluate_typed(OBSERVATION, "Observation.value | Observation.code")
    assert [n.fhir_type for n in nodes] == ["Quantity", "CodeableConcept"]
    assert nodes[0].value["code"] == "[lb_av]"
    nodes = fhirpath.evaluate_typed(PATIENT, "Patient.birthDate | Patient.contact | 1 + 1")
    assert [n.fhir_type for n in nodes] == ["date", "BackboneElement", "System.Integer"]
    assert [n.fhir_type for n in fhirpath.evaluate_typed(PATIENT, "Patient.contact.name")] == [
        "HumanName"
    ]


def test_type_name_filters_the_context() -> None:
    assert ev("Patient.name.family") == ["Chalmers", "Windsor"]
    assert ev("Person.name.family | Patient.gender") == ["female"]
    assert ev("Resource.id") == ["p1"]
    with pytest.raises(FhirPathEvaluationError):
        ev("Encounter.status", strict=True)


def test_strict_mode_rejects_unknown_elements() -> None:
    assert ev("name.given1") == []
    with pytest.raises(FhirPathEvaluationError, match="given1"):
        ev("name.given1", strict=True)
    assert ev("Observation.valueQuantity.unit", OBSERVATION) == ["lbs"]  # lenient JSON name
    with pytest.raises(FhirPathEvaluationError):
        ev("Observation.valueQuantity.unit", OBSERVATION, strict=True)
    # Types the definitions do not describe have nothing to check against.
    assert ev("a.b", {"resourceType": "Custom", "a": {"b": 1}}, strict=True) == [1]


def test_primitive_extensions() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    assert ev(f"Patient.birthDate.extension('{url}').value") == ["1974-12-25T14:35:45-05:00"]
    assert ev("Patient.name.last().given.select($this.hasValue())") == [False, True]
    assert ev("Patient.name.last().given.id") == ["g1"]
    assert ev("Patient.name.last().given") == ["Jane"]  # evaluate() drops value-less primitives
    assert len(fhirpath.evaluate_typed(PATIENT, "Patient.name.last().given")) == 2


# -- functions used by the R4 search parameters -----------------------------------------------


def test_where_exists_first() -> None:
    assert ev("Patient.name.where(use='official').family") == ["Chalmers"]
    assert ev("Patient.telecom.where(system='phone').value") == ["555-1234"]
    assert ev("Patient.telecom.where(system='fax')") == []
    assert ev("Patient.name.exists(use = 'maiden')") == [True]
    assert ev("Patient.deceased.exists() and Patient.deceased != false") == [False]
    assert ev("Patient.name.first().given.first()") == ["Peter"]
    assert ev("Patient.name.where(given = 'Jim').use") == ["usual"]


def test_extension_navigation() -> None:
    race = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    assert ev(f"Patient.extension.where(url = '{race}').extension.value.code") == ["2106-3"]
    assert ev(f"Patient.extension('{race}').extension('text').value") == ["White"]
    assert ev("Patient.extension.where(url='http://example.org/flag').value") == [False]
    assert ev("Patient.extension.value.ofType(Coding)") == []


def test_resolve_without_resolver_builds_typed_stubs() -> None:
    assert ev("Observation.subject.where(resolve() is Patient)", OBSERVATION) == [
        {"reference": "Patient/p1"}
    ]
    assert ev("Observation.performer.where(resolve() is Practitioner).reference", OBSERVATION) == [
        "Practitioner/dr1"
    ]
    absolute = {
        "resourceType": "Observation",
        "subject": {"reference": "http://x.org/fhir/Group/7"},
    }
    assert ev("Observation.subject.where(resolve() is Patient)", absolute) == []
    assert ev("Observation.subject.resolve().id", absolute) == ["7"]
    assert ev("Observation.subject.where(resolve() is Patient)", {"resourceType": "x"}) == []


def test_resolve_uses_the_resolver_and_contained_resources() -> None:
    seen: list[str] = []

    def resolver(reference: str) -> dict[str, Any] | None:
        seen.append(reference)
        return {"resourceType": "Patient", "id": "p1", "gender": "male"}

    assert ev("Observation.subject.resolve().gender", OBSERVATION, resolver=resolver) == ["male"]
    assert seen == ["Patient/p1"]
    contained = {
        "resourceType": "Observation",
        "contained": [{"resourceType": "Patient", "id": "c1", "gender": "other"}],
        "subject": {"reference": "#c1"},
    }
    assert ev("Observation.subject.resolve().gender", contained) == ["other"]


def test_bundle_entry_resource_is_typed() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Composition", "subject": {"reference": "urn:uuid:2"}},
            },
            {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient", "id": "x"}},
        ],
    }
    expression = "Bundle.entry[0].resource.as(Composition).subject"
    assert ev(expression, bundle) == [{"reference": "urn:uuid:2"}]
    assert ev("Bundle.entry.resource.ofType(Patient).id", bundle) == ["x"]
    assert ev(f"{expression}.resolve().id", bundle) == ["x"]


def test_union_of_search_paths() -> None:
    expression = "Observation.code | Observation.component.code"
    assert len(ev(expression, OBSERVATION)) == 4
    assert ev("Observation.code | Observation.code", OBSERVATION) == [OBSERVATION["code"]]
    expression = "Patient.telecom.where(system='email') | Person.telecom.where(system='email')"
    assert [t["value"] for t in ev(expression)] == ["p@example.org"]


def test_variables() -> None:
    assert ev("%resource.id") == ["p1"]
    assert ev("%context.gender") == ["female"]
    assert ev("%ucum") == ["http://unitsofmeasure.org"]
    assert ev("%`vs-administrative-gender`") == [
        "http://hl7.org/fhir/ValueSet/administrative-gender"
    ]
    assert ev("%limit + 1", variables={"limit": 2}) == [3]
    assert ev("%codes.count()", variables={"codes": ["a", "b"]}) == [2]
    assert ev("Patient.gender in %codes", variables={"codes": ["female", "male"]}) == [True]
    with pytest.raises(FhirPathEvaluationError, match="Unknown variable"):
        ev("%nope")


def test_string_and_math_functions() -> None:
    assert ev("'abcdef'.substring(2, 3)") == ["cde"]
    assert ev("'a,b'.split(',')") == ["a", "b"]
    assert ev("Patient.name.given.join(' ')") == ["Peter James Jim Jane"]
    assert ev("'abc123'.replaceMatches('([a-z]+)(\\\\d+)', '$2$1')") == ["123abc"]
    assert ev("'FHIR'.matches('^F')") == [True]
    assert ev("(-5.5).abs()") == [Decimal("5.5")]
    assert ev("3.14159.round(2)") == [Decimal("3.14")]
    assert ev("16.log(2)") == [Decimal(4)]
    assert ev("1.587.lowBoundary(2)") == [Decimal("1.58")]
    assert ev("@2014.highBoundary(6)")[0].literal() == "@2014-12"
    assert ev("1 / 0") == []
    with pytest.raises(FhirPathEvaluationError):
        ev("Patient.name.startsWith('P')")  # a HumanName is not a string


def test_iif_evaluates_only_the_chosen_branch() -> None:
    assert ev("iif(true, 'yes', (1 | 2).single())") == ["yes"]
    assert ev("iif(Patient.active, 'active', 'inactive')") == ["active"]
    assert ev("iif({}, 1, 2)") == [2]


def test_descendants_and_repeat() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "item": [{"linkId": "1", "item": [{"linkId": "1.1"}, {"linkId": "1.2", "item": []}]}],
    }
    assert ev("Questionnaire.repeat(item).linkId", questionnaire) == ["1", "1.1", "1.2"]
    assert ev("Questionnaire.descendants().linkId", questionnaire) == ["1", "1.1", "1.2"]
    assert ev("Questionnaire.item.item.type().name", questionnaire) == ["BackboneElement"] * 2


def test_unknown_resource_types_navigate_as_json() -> None:
    custom = {"resourceType": "Custom", "a": {"b": [1, 2.5, "x", True]}}
    assert ev("a.b", custom) == [1, 2.5, "x", True]
    assert ev("a.b.where($this is Integer or $this = 'x')", custom) == ["x"]  # FHIR integer
    assert ev("a.b.where($this is integer)", custom) == [1]
    assert ev("a.b.first() + 1", custom) == [2]


# -- the packaged R4 search parameters ---------------------------------------------------------


def _search_parameters() -> list[dict[str, Any]]:
    raw = resources.files("healthmesh.fhir").joinpath("data", "search-parameters.json.gz")
    loaded: list[dict[str, Any]] = json.loads(gzip.decompress(raw.read_bytes()))
    return loaded


def test_every_search_parameter_expression_compiles_and_runs() -> None:
    params = [p for p in _search_parameters() if p.get("expression")]
    assert len(params) > 1000
    for param in params:
        compiled = fhirpath.compile(param["expression"])
        for base in param["base"]:
            # Every expression runs against a minimal resource of each of its base types.
            compiled.evaluate({"resourceType": base, "id": "x"})
    assert fhirpath.compile(params[0]["expression"]).evaluate(
        {"resourceType": params[0]["base"][0], "identifier": [{"value": "v"}]}
    ) == [{"value": "v"}]


def test_strict_mode_static_checks() -> None:
    # Period has no 'unit': provable before evaluation although 'as Period' is empty here.
    assert ev("(Observation.value as Period).unit", OBSERVATION) == []
    with pytest.raises(FhirPathEvaluationError, match="unit"):
        ev("(Observation.value as Period).unit", OBSERVATION, strict=True)
    # A choice element may be any of its types: 'unit' exists on Quantity.
    assert ev("Observation.value.unit", OBSERVATION, strict=True) == ["lbs"]
    # Order-dependent functions after an unordered collection (spec §5.8 children()).
    assert len(ev("Patient.children().skip(1)")) > 0
    with pytest.raises(FhirPathEvaluationError, match="ordered"):
        ev("Patient.children().skip(1)", strict=True)
    assert ev("Patient.name.skip(1).given", strict=True) == ["Jim", "Jane"]


def test_typed_strings_are_not_dates() -> None:
    assert ev("Patient.birthDate = '1974-12-25'") == [False]  # date vs String (spec §6.1)
    with pytest.raises(FhirPathEvaluationError):
        ev("Patient.birthDate < '1975'")
    untyped = {"resourceType": "Custom", "when": "2024-01-02"}
    assert ev("when = @2024-01-02", untyped) == [True]  # untyped JSON meets a date literal
    assert ev("when < @2025", untyped) == [True]


def test_multi_type_unions_only_run_matching_branches() -> None:
    expression = "Patient.gender | Practitioner.gender | Resource.id | 'x'"
    assert ev(expression) == ["female", "p1", "x"]
    practitioner = {"resourceType": "Practitioner", "id": "d", "gender": "male"}
    assert ev(expression, practitioner) == ["male", "d", "x"]
    assert ev("(Patient.name | Practitioner.name).count()") == [3]
    with pytest.raises(FhirPathEvaluationError):
        ev(expression, strict=True)  # strict mode: Practitioner is not the context


def test_now_is_fixed_within_one_evaluation() -> None:
    assert ev("now() = now() and today() = today()") == [True]
    assert ev("now() > @2020-01-01T00:00:00Z") == [True]


def test_deeply_nested_expressions_fail_cleanly() -> None:
    with pytest.raises(FhirPathError):
        fhirpath.compile("(" * 5000 + "1" + ")" * 5000)


def test_search_expressions_are_fast() -> None:
    """A loose guard: Patient's ~30 search expressions take well under a millisecond."""
    import time

    paths = [
        fhirpath.compile(p["expression"])
        for p in _search_parameters()
        if p.get("expression") and {"Patient", "Resource", "DomainResource"} & set(p["base"])
    ]
    assert len(paths) > 20
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for path in paths:
            path.evaluate(PATIENT)
        best = min(best, time.perf_counter() - start)
    assert best < 0.005, f"{len(paths)} expressions took {best * 1000:.2f} ms"
