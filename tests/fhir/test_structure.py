"""The shipped R4 structure definitions and their lookup API (healthmesh.fhir.structure)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from healthmesh.fhir import structure
from healthmesh.fhir.structure import ElementDef

REPO = Path(__file__).resolve().parents[2]
SHARED_FHIR = REPO.parent / "shared/data/fhir"
SHIPPED = REPO / "src/healthmesh/fhir/data/structure.json.gz"


def test_resource_types_are_the_146_concrete_r4_resource_types() -> None:
    types = structure.resource_types()
    assert len(types) == 146
    assert {"Patient", "Observation", "Bundle", "Parameters", "Binary"} <= types
    # Abstract bases, logical models and post-R4 additions in the source copy are excluded.
    assert types.isdisjoint({"Resource", "DomainResource", "MetadataResource"})
    assert "SubscriptionStatus" not in types


def test_is_resource_type_only_accepts_concrete_resource_names() -> None:
    assert structure.is_resource_type("Patient")
    assert not structure.is_resource_type("patient")
    assert not structure.is_resource_type("Resource")
    assert not structure.is_resource_type("HumanName")


def test_primitive_and_complex_types_are_told_apart() -> None:
    for code in ("string", "boolean", "dateTime", "positiveInt", "xhtml", "canonical"):
        assert structure.is_primitive(code), code
        assert not structure.is_complex_type(code), code
    for code in ("HumanName", "Quantity", "Age", "Extension", "Element", "BackboneElement"):
        assert structure.is_complex_type(code), code
        assert not structure.is_primitive(code), code
    assert not structure.is_primitive("Patient")
    assert not structure.is_complex_type("Patient")
    assert not structure.is_primitive("nonsense")


def test_quantity_profiles_are_treated_as_quantity() -> None:
    assert structure.is_complex_type("SimpleQuantity")
    assert structure.base_type("SimpleQuantity") == "Quantity"
    assert structure.children("MoneyQuantity") == structure.children("Quantity")
    codes = {t for e in structure.elements_of("Medication") for t in e.types}
    assert "SimpleQuantity" not in codes


def test_resource_children_include_inherited_elements() -> None:
    patient = structure.children("Patient")
    for inherited in (
        "id",
        "meta",
        "implicitRules",
        "language",
        "text",
        "contained",
        "extension",
        "modifierExtension",
    ):
        assert inherited in patient, inherited
    assert patient["name"].types == ("HumanName",)
    assert patient["name"].path == "Patient.name"
    assert patient["contained"].types == ("Resource",)
    # Bundle is a Resource, not a DomainResource: no text / contained / extension.
    assert "text" not in structure.children("Bundle")
    assert "meta" in structure.children("Bundle")


def test_resource_id_is_typed_id_and_element_id_string() -> None:
    assert structure.children("Patient")["id"].types == ("id",)
    element_id = structure.children("HumanName")["id"]
    assert element_id.types == ("string",)
    assert element_id.xml_attribute
    assert structure.children("Extension")["url"].types == ("uri",)


def test_datatype_children_include_id_and_extension() -> None:
    name = structure.children("HumanName")
    assert set(name) == {
        "id",
        "extension",
        "use",
        "text",
        "family",
        "given",
        "prefix",
        "suffix",
        "period",
    }
    assert name["given"].is_array
    assert not name["family"].is_array


def test_backbone_element_children_are_found_by_path() -> None:
    contact = structure.children("Patient.contact")
    assert contact["relationship"].types == ("CodeableConcept",)
    assert contact["relationship"].path == "Patient.contact.relationship"
    assert "modifierExtension" in contact
    assert structure.children("Patient")["contact"].types == ("BackboneElement",)
    # Element-typed inline structures in data types work the same way.
    assert "frequency" in structure.children("Timing.repeat")


def test_content_reference_children_are_those_of_the_referenced_element() -> None:
    item = structure.children("Questionnaire.item")["item"]
    assert item.content_reference == "Questionnaire.item"
    assert item.types == ()
    assert structure.children("Questionnaire.item.item") == structure.children("Questionnaire.item")
    assert "linkId" in structure.children("Questionnaire.item.item.item")
    assert structure.children("Bundle.entry.link") == structure.children("Bundle.link")


def test_choice_elements_are_keyed_without_the_x_suffix() -> None:
    value = structure.children("Observation")["value"]
    assert value.choice
    assert value.path == "Observation.value[x]"
    assert value.name == "value"
    assert "value[x]" not in structure.children("Observation")
    assert structure.choice_types(value)[:3] == ("Quantity", "CodeableConcept", "string")
    assert structure.choice_types(structure.children("Observation")["status"]) == ()
    assert structure.choice_key("value", "dateTime") == "valueDateTime"


def test_children_follow_paths_through_data_types_and_typed_choices() -> None:
    assert structure.children("Patient.name") == structure.children("HumanName")
    assert structure.children("Observation.valueQuantity") == structure.children("Quantity")
    assert structure.children("Patient.contact.name") == structure.children("HumanName")
    birth_date = structure.children("Patient.birthDate")
    assert set(birth_date) == {"id", "extension", "value"}
    # A primitive's value is a System type in the snapshot; it is named by the primitive.
    assert birth_date["value"].types == ("date",)
    assert structure.children("xhtml")["extension"].max == "0"


def test_children_of_unknown_or_ambiguous_paths_raise_key_error() -> None:
    with pytest.raises(KeyError):
        structure.children("Patient.nonsense")
    with pytest.raises(KeyError):
        structure.children("NoSuchType")
    with pytest.raises(KeyError):
        structure.children("Observation.value")  # which of the choice types?


def test_elementdef_is_frozen_and_is_array_follows_max() -> None:
    el = ElementDef(
        path="X.y",
        name="y",
        min=0,
        max="*",
        types=("string",),
        choice=False,
        content_reference=None,
    )
    assert el.is_array
    assert not dataclasses.replace(el, max="1").is_array
    assert not dataclasses.replace(el, max="0").is_array
    assert dataclasses.replace(el, max="3").is_array
    with pytest.raises(dataclasses.FrozenInstanceError):
        el.min = 1  # type: ignore[misc]


def test_required_and_repeating_elements_carry_r4_cardinality() -> None:
    status = structure.children("Observation")["status"]
    assert (status.min, status.max) == (1, "1")
    assert structure.children("Observation")["category"].max == "*"
    assert structure.children("Extension")["url"].min == 1
    assert structure.element("Observation.value[x]") == structure.children("Observation")["value"]
    assert structure.element("Patient.name.given") is None


def test_reference_target_types_are_recorded() -> None:
    subject = structure.children("Observation")["subject"]
    assert subject.types == ("Reference",)
    assert {"Patient", "Group", "Device", "Location"} <= set(subject.target_types)
    assert structure.children("Bundle.entry")["resource"].target_types == ()
    # canonical(ValueSet)
    assert structure.children("Questionnaire.item")["answerValueSet"].target_types == ("ValueSet",)
    # Targets outside core R4 in the source copy (Medplum's Bot) are dropped.
    for el in structure.elements_of("AuditEvent"):
        assert all(structure.is_resource_type(t) or t == "Resource" for t in el.target_types)


def test_primitive_regexes_come_from_the_definitions() -> None:
    date_time = structure.primitive_regex("dateTime")
    assert date_time is not None
    assert re.fullmatch(date_time, "2019-05-31T12:36:31-04:00")
    assert re.fullmatch(date_time, "2019")
    assert not re.fullmatch(date_time, "2019-13")
    assert structure.primitive_regex("id") == r"[A-Za-z0-9\-\.]{1,64}"
    assert structure.primitive_regex("xhtml") is None
    assert structure.primitive_regex("HumanName") is None
    assert structure.primitive_json_type("positiveInt") == "number"
    assert structure.primitive_json_type("boolean") == "boolean"
    assert structure.primitive_json_type("instant") == "string"


def test_base_type_walks_the_r4_type_hierarchy() -> None:
    assert structure.base_type("Patient") == "DomainResource"
    assert structure.base_type("DomainResource") == "Resource"
    assert structure.base_type("Resource") is None
    assert structure.base_type("Bundle") == "Resource"
    assert structure.base_type("Age") == "Quantity"
    assert structure.base_type("positiveInt") == "integer"
    assert structure.base_type("Dosage") == "BackboneElement"
    assert structure.base_type("BackboneElement") == "Element"
    assert structure.base_type("nonsense") is None
    assert structure.is_abstract("DomainResource")
    assert not structure.is_abstract("Patient")


def test_every_element_has_a_type_or_a_content_reference() -> None:
    for type_name in sorted(structure.resource_types()):
        for el in structure.elements_of(type_name):
            assert bool(el.types) != bool(el.content_reference), el.path
            assert el.choice or len(el.types) <= 1, el.path
            if el.content_reference:
                assert structure.children(el.content_reference), el.path


def test_shipped_file_is_small() -> None:
    assert SHIPPED.stat().st_size < 1_000_000


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_structure", REPO / "scripts/gen_structure.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared
def test_shipped_file_is_what_the_generator_makes_from_the_r4_definitions() -> None:
    if not (SHARED_FHIR / "profiles-resources.json").exists():
        pytest.skip("../shared/data/fhir not present")
    gen = _generator()
    assert gen.encode(gen.build(SHARED_FHIR)) == SHIPPED.read_bytes()
