"""Structural validation of R4 JSON resources (healthmesh.fhir.validation)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.fhir.errors import InvalidResource, Issue
from healthmesh.fhir.validation import MAX_ISSUES, check_resource, validate_resource

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared/data/synthea/R4"


def patient(**extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
    }
    resource.update(extra)
    return resource


def observation(**extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-01-01T10:00:00Z",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org"},
    }
    resource.update(extra)
    return resource


def where(issues: list[Issue]) -> list[str]:
    """The issue locations, in report order ("" for an issue without one)."""
    return [i.expression or "" for i in issues]


def only(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, issues
    return issues[0]


# -- the resource root --------------------------------------------------------------------


def test_valid_resources_have_no_issues() -> None:
    assert validate_resource(patient()) == []
    assert validate_resource(observation()) == []
    assert validate_resource(patient(), expected_type="Patient") == []


def test_resource_must_be_a_json_object() -> None:
    issue = only(validate_resource(["Patient"]))
    assert issue.code == "structure"
    assert "JSON object" in issue.diagnostics
    assert only(validate_resource("x", expected_type="Patient")).expression == "Patient"


def test_missing_resource_type_is_required() -> None:
    issue = only(validate_resource({"id": "x"}))
    assert issue.code == "required"
    assert "resourceType" in issue.diagnostics


@pytest.mark.parametrize("rt", ["Patients", "patient", "Resource", "DomainResource", 5, ""])
def test_unknown_or_abstract_resource_type_is_rejected(rt: object) -> None:
    issue = only(validate_resource({"resourceType": rt}))
    assert issue.code == "code-invalid"


def test_resource_type_must_match_the_expected_type() -> None:
    issue = only(validate_resource(patient(), expected_type="Observation"))
    assert issue.code == "invalid"
    assert "Expected resourceType 'Observation', found 'Patient'" in issue.diagnostics


@pytest.mark.parametrize("rid", ["a" * 64, "A-b.9", "0"])
def test_valid_resource_ids_are_accepted(rid: str) -> None:
    assert validate_resource(patient(id=rid)) == []


@pytest.mark.parametrize("rid", ["a" * 65, "a_b", "a/b", "a b", ""])
def test_resource_id_must_match_the_id_syntax(rid: str) -> None:
    issue = only(validate_resource(patient(id=rid)))
    assert issue.expression == "Patient.id"
    assert issue.code == "value"


def test_check_resource_returns_valid_resource_and_raises_with_all_issues() -> None:
    good = patient()
    assert check_resource(good) is good
    with pytest.raises(InvalidResource) as caught:
        check_resource(patient(gender=1, foo=2))
    assert caught.value.status == 400
    assert sorted(where(list(caught.value.issues))) == ["Patient.foo", "Patient.gender"]
    outcome = caught.value.outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert validate_resource(outcome) == []


# -- element names ------------------------------------------------------------------------


def test_unknown_element_is_reported_with_its_path() -> None:
    bad = patient()
    bad["name"][0]["nickname"] = "Pete"
    issue = only(validate_resource(bad))
    assert issue.expression == "Patient.name[0].nickname"
    assert issue.code == "structure"
    assert "Unknown element 'nickname'" in issue.diagnostics


def test_unknown_element_in_nested_backbone_is_reported() -> None:
    bad = patient(contact=[{"relationship": [{"text": "x"}], "name": {"family": "A"}, "age": 4}])
    assert where(validate_resource(bad)) == ["Patient.contact[0].age"]


def test_resource_type_is_only_allowed_at_resource_roots() -> None:
    bad = patient(name=[{"resourceType": "HumanName", "family": "x"}])
    issue = only(validate_resource(bad))
    assert issue.expression == "Patient.name[0].resourceType"
    assert "only allowed at the root" in issue.diagnostics


def test_fhir_comments_are_ignored() -> None:
    assert validate_resource(patient(fhir_comments=["legacy"])) == []


# -- choice elements ----------------------------------------------------------------------


def test_choice_element_accepts_each_allowed_variant() -> None:
    for variant, value in [
        ("valueString", "high"),
        ("valueBoolean", True),
        ("valueInteger", 3),
        ("valueCodeableConcept", {"text": "x"}),
        ("valuePeriod", {"start": "2020"}),
        ("valueTime", "10:00:00"),
    ]:
        obs = observation()
        del obs["valueQuantity"]
        obs[variant] = value
        assert validate_resource(obs) == [], variant


def test_choice_element_with_a_type_suffix_that_is_not_allowed_is_unknown() -> None:
    obs = observation()
    del obs["valueQuantity"]
    obs["valueMoney"] = {"value": 3}
    issue = only(validate_resource(obs))
    assert issue.expression == "Observation.valueMoney"
    assert "'Money' is not an allowed type for value[x]" in issue.diagnostics


def test_choice_element_without_type_suffix_is_unknown() -> None:
    issue = only(validate_resource(observation(value=3)))
    assert issue.expression == "Observation.value"
    assert "choice element" in issue.diagnostics


def test_choice_variants_are_case_sensitive() -> None:
    assert where(validate_resource(observation(valuestring="x"))) == ["Observation.valuestring"]


def test_only_one_variant_of_a_choice_may_appear() -> None:
    issue = only(validate_resource(observation(valueString="also")))
    assert issue.code == "structure"
    assert "'valueQuantity' and 'valueString'" in issue.diagnostics


def test_primitive_extension_of_another_choice_variant_counts_as_a_second_variant() -> None:
    obs = observation(_valueString={"extension": [{"url": "http://x", "valueBoolean": True}]})
    assert len(validate_resource(obs)) == 1


def test_required_choice_is_satisfied_by_any_variant() -> None:
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    issue = only(validate_resource(request))
    assert issue.code == "required"
    assert issue.expression == "MedicationRequest.medication[x]"
    request["medicationCodeableConcept"] = {"text": "aspirin"}
    assert validate_resource(request) == []
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": "Medication/m1"}
    assert validate_resource(request) == []


# -- cardinality --------------------------------------------------------------------------


def test_missing_required_elements_are_reported_at_their_path() -> None:
    obs = observation()
    del obs["status"]
    del obs["code"]
    issues = validate_resource(obs)
    assert sorted(where(issues)) == ["Observation.code", "Observation.status"]
    assert {i.code for i in issues} == {"required"}


def test_required_elements_of_absent_parents_are_not_required() -> None:
    # Patient.link.other is 1..1, but Patient.link is optional and absent.
    assert validate_resource(patient()) == []
    issue = only(validate_resource(patient(link=[{"type": "seealso"}])))
    assert issue.expression == "Patient.link[0].other"
    assert issue.code == "required"


def test_required_elements_in_each_array_item_are_checked() -> None:
    links = [
        {"other": {"reference": "Patient/p2"}, "type": "seealso"},
        {"other": {"reference": "Patient/p3"}},
    ]
    assert where(validate_resource(patient(link=links))) == ["Patient.link[1].type"]


def test_single_valued_element_must_not_be_an_array() -> None:
    issue = only(validate_resource(patient(gender=["male"])))
    assert issue.expression == "Patient.gender"
    assert "must not be an array" in issue.diagnostics
    assert where(validate_resource(observation(code=[{"text": "x"}]))) == ["Observation.code"]


def test_repeating_element_must_be_an_array() -> None:
    issue = only(validate_resource(patient(name={"family": "x"})))
    assert issue.expression == "Patient.name"
    assert "must be a JSON array" in issue.diagnostics
    bad = patient(name=[{"given": "Peter"}])
    assert where(validate_resource(bad)) == ["Patient.name[0].given"]


def test_empty_arrays_objects_and_strings_are_invalid() -> None:
    assert where(validate_resource(patient(name=[]))) == ["Patient.name"]
    assert where(validate_resource(patient(maritalStatus={}))) == ["Patient.maritalStatus"]
    assert where(validate_resource(patient(name=[{}]))) == ["Patient.name[0]"]
    assert where(validate_resource(patient(gender=""))) == ["Patient.gender"]
    assert where(validate_resource(patient(name=[{"given": [""]}]))) == ["Patient.name[0].given[0]"]


def test_null_is_rejected_outside_aligned_primitive_arrays() -> None:
    assert where(validate_resource(patient(gender=None))) == ["Patient.gender"]
    assert where(validate_resource(patient(name=None))) == ["Patient.name"]
    assert where(validate_resource(patient(name=[None]))) == ["Patient.name[0]"]
    assert where(validate_resource(patient(name=[{"given": [None]}]))) == [
        "Patient.name[0].given[0]"
    ]


def test_complex_element_must_be_an_object() -> None:
    issue = only(validate_resource(observation(code="8867-4")))
    assert issue.expression == "Observation.code"
    assert "Expected a JSON object (CodeableConcept), found a string" in issue.diagnostics


# -- primitive types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("birthDate", "1974"),
        ("birthDate", "1974-12"),
        ("deceasedDateTime", "2015-02-07T13:28:17.239+02:00"),
        ("deceasedDateTime", "2015-02-07"),
        ("deceasedBoolean", False),
        ("active", True),
        ("multipleBirthInteger", 0),
        ("multipleBirthInteger", -5),
        ("multipleBirthInteger", 2147483647),
        ("implicitRules", "http://example.org/rules"),
        ("language", "en-US"),
    ],
)
def test_valid_primitive_values_are_accepted(element: str, value: object) -> None:
    assert validate_resource(patient(**{element: value})) == []


@pytest.mark.parametrize(
    ("element", "value", "code"),
    [
        ("birthDate", "1974-13-01", "value"),
        ("birthDate", "25/12/1974", "value"),
        ("birthDate", "1974-12-25T10:00:00Z", "value"),
        ("deceasedDateTime", "2015-02-07T13:28", "value"),  # seconds are required
        ("deceasedDateTime", "2015-02-07T13:28:17", "value"),  # time needs a zone
        ("active", "true", "structure"),
        ("active", 1, "structure"),
        ("multipleBirthInteger", True, "structure"),
        ("multipleBirthInteger", "2", "structure"),
        ("multipleBirthInteger", 2.5, "value"),
        ("multipleBirthInteger", 2147483648, "value"),
        ("gender", "fe  male", "value"),  # codes allow single inner spaces only
        ("gender", " male", "value"),
        ("gender", 3, "structure"),
        ("gender", {"value": "male"}, "structure"),
        ("implicitRules", "http://example.org/a rule", "value"),
        ("language", "en-US\u000c", "value"),
    ],
)
def test_invalid_primitive_values_are_rejected(element: str, value: object, code: str) -> None:
    issue = only(validate_resource(patient(**{element: value})))
    assert issue.expression == f"Patient.{element}"
    assert issue.code == code


def test_instant_requires_full_precision_and_zone() -> None:
    assert validate_resource(observation(issued="2020-01-01T10:00:00.123Z")) == []
    assert where(validate_resource(observation(issued="2020-01-01"))) == ["Observation.issued"]


def test_time_must_match_the_time_syntax() -> None:
    obs = observation(valueTime="25:00:00")
    del obs["valueQuantity"]
    assert where(validate_resource(obs)) == ["Observation.valueTime"]


def test_decimal_must_be_a_json_number() -> None:
    obs = observation(valueQuantity={"value": 1.5})
    assert validate_resource(obs) == []
    obs = observation(valueQuantity={"value": "1.5"})
    assert where(validate_resource(obs)) == ["Observation.valueQuantity.value"]
    obs = observation(valueQuantity={"value": True})
    assert where(validate_resource(obs)) == ["Observation.valueQuantity.value"]


def test_positive_and_unsigned_ints_have_lower_bounds() -> None:
    sampled: dict[str, Any] = {"origin": {"value": 0}, "period": 1.0, "dimensions": 1}
    obs = observation(valueSampledData=sampled)
    del obs["valueQuantity"]
    assert validate_resource(obs) == []
    sampled["dimensions"] = 0  # positiveInt
    assert where(validate_resource(obs)) == ["Observation.valueSampledData.dimensions"]
    attachment = {"contentType": "text/plain", "size": 0}  # unsignedInt
    media: dict[str, Any] = {"resourceType": "Media", "status": "completed", "content": attachment}
    assert validate_resource(media) == []
    attachment["size"] = -1
    assert where(validate_resource(media)) == ["Media.content.size"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("urn:uuid:d67a0cff-8f7e-46f7-bb99-577a6623e59a", True),
        ("urn:uuid:D67A0CFF-8F7E-46F7-BB99-577A6623E59A", False),  # R4 regex: lower case
        ("urn:uuid:1234", False),
        ("d67a0cff-8f7e-46f7-bb99-577a6623e59a", False),
    ],
)
def test_uuid_values_follow_the_r4_regex(value: str, ok: bool) -> None:
    extension = [{"url": "http://example.org/uuid", "valueUuid": value}]
    issues = validate_resource(patient(extension=extension))
    assert where(issues) == ([] if ok else ["Patient.extension[0].valueUuid"])


def test_oid_and_base64_values_are_checked() -> None:
    doc: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}],
    }
    assert validate_resource(doc) == []
    doc["content"][0]["attachment"]["data"] = "not base64!"
    assert where(validate_resource(doc)) == ["DocumentReference.content[0].attachment.data"]
    oid = [{"url": "http://example.org/oid", "valueOid": "urn:oid:2.16.840.1.113883"}]
    assert validate_resource(patient(extension=oid)) == []
    oid[0]["valueOid"] = "2.16.840.1.113883"
    assert where(validate_resource(patient(extension=oid))) == ["Patient.extension[0].valueOid"]


def test_strings_allow_whitespace_and_unicode_but_not_form_feeds() -> None:
    text = "Line one\n\tline two — café\u00a0ok"
    obs = observation(valueString=text)
    del obs["valueQuantity"]
    assert validate_resource(obs) == []
    obs["valueString"] = "page\fbreak"
    assert where(validate_resource(obs)) == ["Observation.valueString"]


def test_markdown_and_code_follow_their_regexes() -> None:
    note = {"text": "**bold**\n\n* item"}
    assert validate_resource(observation(note=[note])) == []
    coding = {"system": "http://loinc.org", "code": "8867-4 "}
    issue = only(validate_resource(observation(code={"coding": [coding]})))
    assert issue.expression == "Observation.code.coding[0].code"


def test_narrative_div_must_be_an_xhtml_div_string() -> None:
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Hi</div>'}
    assert validate_resource(patient(text=text)) == []
    text["div"] = "<p>Hi</p>"
    assert where(validate_resource(patient(text=text))) == ["Patient.text.div"]
    text["div"] = 3  # type: ignore[assignment]
    assert where(validate_resource(patient(text=text))) == ["Patient.text.div"]
    assert where(validate_resource(patient(text={"status": "generated"}))) == ["Patient.text.div"]


# -- primitive extensions (json.html#primitive) -------------------------------------------


def ext(value: str = "x") -> dict[str, Any]:
    return {"extension": [{"url": "http://example.org/ext", "valueString": value}]}


def test_primitive_extension_sibling_is_accepted() -> None:
    assert validate_resource(patient(_birthDate=ext())) == []
    assert validate_resource(patient(_birthDate={"id": "a1"})) == []


def test_primitive_extension_alone_satisfies_a_required_primitive() -> None:
    obs = observation(_status=ext())
    del obs["status"]
    assert validate_resource(obs) == []


def test_primitive_extension_content_is_validated_as_element() -> None:
    issue = only(validate_resource(patient(_birthDate={"extension": [{"valueString": "x"}]})))
    assert issue.expression == "Patient.birthDate.extension[0].url"
    assert issue.code == "required"
    assert where(validate_resource(patient(_birthDate={"value": "x"}))) == [
        "Patient.birthDate.value"
    ]
    assert where(validate_resource(patient(_birthDate={}))) == ["Patient._birthDate"]
    assert where(validate_resource(patient(_birthDate="x"))) == ["Patient._birthDate"]
    assert where(validate_resource(patient(_birthDate=[ext()]))) == ["Patient._birthDate"]


def test_primitive_extension_is_only_allowed_on_primitives() -> None:
    issue = only(validate_resource(patient(_name=ext())))
    assert issue.expression == "Patient._name"
    assert "primitive" in issue.diagnostics
    assert where(validate_resource(patient(_foo=ext()))) == ["Patient._foo"]


def test_element_id_and_extension_url_take_no_primitive_extension() -> None:
    bad = patient(name=[{"family": "x", "id": "n1", "_id": ext()}])
    assert where(validate_resource(bad)) == ["Patient.name[0]._id"]
    bad = patient(extension=[{"url": "http://x", "_url": ext(), "valueString": "y"}])
    assert where(validate_resource(bad)) == ["Patient.extension[0]._url"]
    assert validate_resource(patient(_id=ext())) == []  # Resource.id is a primitive `id`


def test_primitive_array_extensions_align_with_nulls() -> None:
    name = {"given": ["Peter", None, "James"], "_given": [None, ext("Jim"), None]}
    assert validate_resource(patient(name=[name])) == []
    name = {"_given": [ext("a"), ext("b")]}  # extensions without values
    assert validate_resource(patient(name=[name])) == []


def test_primitive_array_extension_misalignment_is_reported() -> None:
    short = {"given": ["Peter", "James"], "_given": [ext()]}
    assert where(validate_resource(patient(name=[short]))) == ["Patient.name[0].given"]
    both_null = {"given": ["Peter", None], "_given": [ext(), None]}
    issues = validate_resource(patient(name=[both_null]))
    assert "Patient.name[0].given[1]" in where(issues)
    not_array = {"given": ["Peter"], "_given": ext()}
    assert where(validate_resource(patient(name=[not_array]))) == ["Patient.name[0]._given"]
    bad_item = {"given": ["Peter"], "_given": [{"extension": [{"url": 5}]}]}
    assert where(validate_resource(patient(name=[bad_item]))) == [
        "Patient.name[0].given[0].extension[0].url"
    ]


def test_null_in_primitive_array_needs_an_extension_at_the_same_index() -> None:
    name = {"given": ["Peter", None], "_given": [ext(), None]}
    issue = only(validate_resource(patient(name=[name])))
    assert issue.expression == "Patient.name[0].given[1]"


# -- extensions ---------------------------------------------------------------------------


def test_extension_requires_url_and_accepts_any_value_type() -> None:
    extensions = [
        {"url": "http://x/a", "valueAddress": {"city": "Boston"}},
        {"url": "http://x/b", "valueReference": {"reference": "Patient/p2"}},
        {"url": "http://x/c", "extension": [{"url": "inner", "valueCode": "M"}]},
    ]
    assert validate_resource(patient(extension=extensions)) == []
    issue = only(validate_resource(patient(extension=[{"valueCode": "M"}])))
    assert issue.expression == "Patient.extension[0].url"
    assert issue.code == "required"


def test_extension_values_are_validated_by_their_type() -> None:
    extensions: list[dict[str, Any]] = [
        {"url": "http://x", "extension": [{"url": "a", "valueDate": "2020-02-30x"}]}
    ]
    assert where(validate_resource(patient(extension=extensions))) == [
        "Patient.extension[0].extension[0].valueDate"
    ]
    extensions = [{"url": "http://x", "valueFoo": 1}]
    assert where(validate_resource(patient(extension=extensions))) == [
        "Patient.extension[0].valueFoo"
    ]


def test_modifier_extension_is_validated_as_extension() -> None:
    bad = patient(modifierExtension=[{"url": "http://x", "valueBoolean": "yes"}])
    assert where(validate_resource(bad)) == ["Patient.modifierExtension[0].valueBoolean"]


# -- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p1",
        "Patient/p1/_history/2",
        "Practitioner/a.b-C",
        "http://example.org/fhir/Patient/123",
        "https://example.org/fhir/Patient/123/_history/1",
        "#contained-1",
        "#",
        "urn:uuid:d67a0cff-8f7e-46f7-bb99-577a6623e59a",
        "urn:oid:1.2.840.113619.2.1",
        "Patient?identifier=http://hospital.org|123",
    ],
)
def test_valid_references_are_accepted(reference: str) -> None:
    assert validate_resource(observation(subject={"reference": reference})) == []


@pytest.mark.parametrize(
    "reference",
    [
        "Patient",
        "Patient/",
        "patient/p1",
        "Pateint/p1",
        "Patient/p_1",
        "Patient/p1/_history/",
        "Patient/p1/extra",
        "ftp://example.org/Patient/1",
        "urn:uuid:not-a-uuid",
        "urn:isbn:0451450523",
        "Patient?",
        "p1",
        "Patient/p 1",
    ],
)
def test_invalid_references_are_reported_at_reference(reference: str) -> None:
    issue = only(validate_resource(observation(subject={"reference": reference})))
    assert issue.expression == "Observation.subject.reference"
    assert issue.code == "value"


def test_unknown_type_in_reference_is_named() -> None:
    issue = only(validate_resource(observation(subject={"reference": "Pateint/p1"})))
    assert "Pateint" in issue.diagnostics


def test_references_are_checked_inside_choices_and_extensions() -> None:
    bad = patient(extension=[{"url": "http://x", "valueReference": {"reference": "nope"}}])
    assert where(validate_resource(bad)) == ["Patient.extension[0].valueReference.reference"]


def test_reference_without_reference_element_is_fine() -> None:
    subject = {"identifier": {"system": "http://x", "value": "1"}, "display": "Pat"}
    assert validate_resource(observation(subject=subject)) == []


# -- nested resources ---------------------------------------------------------------------


def test_contained_resources_are_validated_recursively() -> None:
    contained = [{"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Who"}]}]
    good = patient(contained=contained, generalPractitioner=[{"reference": "#pr1"}])
    assert validate_resource(good) == []
    bad = copy.deepcopy(good)
    bad["contained"][0]["gender"] = "robot "
    bad["contained"].append({"resourceType": "Nope"})
    bad["contained"].append("Practitioner")
    issues = validate_resource(bad)
    assert where(issues) == [
        "Patient.contained[0].gender",
        "Patient.contained[1]",
        "Patient.contained[2]",
    ]
    assert issues[1].code == "code-invalid"


def test_contained_resources_need_a_resource_type() -> None:
    issue = only(validate_resource(patient(contained=[{"id": "x"}])))
    assert issue.expression == "Patient.contained[0]"
    assert issue.code == "required"


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i}",
                "resource": r,
                "request": {"method": "POST", "url": r.get("resourceType", "x")},
            }
            for i, r in enumerate(resources)
        ],
    }


def test_bundle_entry_resources_are_validated_recursively() -> None:
    good = bundle(patient(), observation())
    good["entry"][1]["resource"]["subject"]["reference"] = good["entry"][0]["fullUrl"]
    assert validate_resource(good) == []
    assert validate_resource(good, expected_type="Bundle") == []
    bad = bundle(patient(), observation(), observation(), observation(status=None))
    issue = only(validate_resource(bad))
    assert issue.expression == "Bundle.entry[3].resource.status"


def test_bundle_entry_without_required_request_parts_is_reported() -> None:
    b = bundle(patient())
    del b["entry"][0]["request"]["method"]
    assert where(validate_resource(b)) == ["Bundle.entry[0].request.method"]


def test_bundle_entries_may_use_conditional_references() -> None:
    obs = observation(subject={"reference": "Patient?identifier=http://x|1"})
    assert validate_resource(bundle(obs)) == []


def test_bundle_entry_resource_must_be_a_resource() -> None:
    b = bundle(patient())
    b["entry"][0]["resource"] = {"family": "x"}
    issue = only(validate_resource(b))
    assert issue.expression == "Bundle.entry[0].resource"
    assert issue.code == "required"


def test_bundle_response_outcome_and_parameters_resources_are_resources() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "400", "outcome": outcome}}],
    }
    assert where(validate_resource(response)) == ["Bundle.entry[0].response.outcome.issue[0].code"]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "return", "resource": patient(gender="x  y")},
            {"name": "count", "valueInteger": 3},
            {"name": "nested", "part": [{"name": "p", "resource": {"resourceType": "X"}}]},
        ],
    }
    assert where(validate_resource(params)) == [
        "Parameters.parameter[0].resource.gender",
        "Parameters.parameter[2].part[0].resource",
    ]


def test_nested_bundles_are_validated() -> None:
    inner = bundle(observation(status=" final"))
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    assert where(validate_resource(outer)) == ["Bundle.entry[0].resource.entry[0].resource.status"]


# -- content references and deep backbones -------------------------------------------------


def test_content_reference_items_are_validated_like_their_target() -> None:
    questionnaire: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {
                "linkId": "1",
                "type": "group",
                "item": [
                    {
                        "linkId": "1.1",
                        "type": "group",
                        "item": [{"linkId": "1.1.1", "type": "string", "text": "Name?"}],
                    }
                ],
            }
        ],
    }
    assert validate_resource(questionnaire) == []
    deepest = questionnaire["item"][0]["item"][0]["item"][0]
    del deepest["type"]
    deepest["colour"] = "red"
    assert sorted(where(validate_resource(questionnaire))) == [
        "Questionnaire.item[0].item[0].item[0].colour",
        "Questionnaire.item[0].item[0].item[0].type",
    ]


def test_nested_backbone_elements_are_validated() -> None:
    claim: dict[str, Any] = {
        "resourceType": "ExplanationOfBenefit",
        "status": "active",
        "type": {"text": "x"},
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2020-01-01",
        "insurer": {"display": "x"},
        "provider": {"display": "y"},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": {"display": "z"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"text": "x"},
                "adjudication": [{"category": {"text": "x"}, "amount": {"value": "3"}}],
            }
        ],
    }
    assert where(validate_resource(claim)) == [
        "ExplanationOfBenefit.item[0].adjudication[0].amount.value"
    ]
    claim["item"][0]["adjudication"][0]["amount"]["value"] = 3
    claim["item"][0]["sequence"] = 0
    assert where(validate_resource(claim)) == ["ExplanationOfBenefit.item[0].sequence"]


def test_element_typed_datatype_parts_are_validated() -> None:
    timing = {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d", "when": ["MORN"]}}
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "x"},
        "dosageInstruction": [{"timing": timing}],
    }
    assert validate_resource(request) == []
    timing["repeat"]["when"] = "MORN"
    assert where(validate_resource(request)) == [
        "MedicationRequest.dosageInstruction[0].timing.repeat.when"
    ]


# -- robustness ---------------------------------------------------------------------------


def test_many_issues_are_capped() -> None:
    bad = patient(name=[{"given": [1] * (MAX_ISSUES + 50)}])
    issues = validate_resource(bad)
    assert len(issues) == MAX_ISSUES + 1
    assert issues[-1].severity == "information"
    with pytest.raises(InvalidResource):
        check_resource(bad)


def test_deeply_nested_content_is_refused_without_recursion_error() -> None:
    item: dict[str, Any] = {"linkId": "x", "type": "group"}
    root = item
    for _ in range(300):
        child: dict[str, Any] = {"linkId": "x", "type": "group"}
        item["item"] = [child]
        item = child
    issues = validate_resource({"resourceType": "Questionnaire", "status": "draft", "item": [root]})
    assert [i.code for i in issues] == ["too-costly"]


def test_validation_does_not_modify_the_resource() -> None:
    original = bundle(patient(name=[{"given": ["a", None], "_given": [None, ext()]}]))
    snapshot = copy.deepcopy(original)
    validate_resource(original)
    assert original == snapshot


# -- real data ----------------------------------------------------------------------------


@pytest.mark.shared
def test_every_synthea_resource_and_bundle_is_valid() -> None:
    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data/synthea not present")
    files = sorted(SYNTHEA.glob("*.json"))
    assert files
    resources = 0
    problems: list[str] = []
    for path in files:
        bundle = orjson.loads(path.read_bytes())
        for entry in bundle["entry"]:
            resources += 1
            for issue in validate_resource(entry["resource"]):
                problems.append(f"{path.name}: {issue.expression}: {issue.diagnostics}")
        for issue in validate_resource(bundle, expected_type="Bundle"):
            problems.append(f"{path.name} (Bundle): {issue.expression}: {issue.diagnostics}")
    assert problems[:20] == []
    assert resources > 30_000
