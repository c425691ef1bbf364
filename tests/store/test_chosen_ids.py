"""Who may create at an id of its choosing (update-as-create): store/access.py
Visibility.reaches_every, asked by Session.chooses_ids (docs/security.md)."""

from __future__ import annotations

from healthmesh.fhir.search.query import parse_query
from healthmesh.store.access import RowRule, Visibility

ADA = "ada"


def test_a_rule_for_every_type_without_criteria_reaches_every_row() -> None:
    assert Visibility({"u": (RowRule(),)}).reaches_every("Observation", "u")
    assert Visibility({"u": (RowRule(res_type="Observation"),)}).reaches_every("Observation", "u")


def test_a_compartment_rule_reaches_every_row_only_of_types_no_patient_owns() -> None:
    patients = Visibility({"u": (RowRule(patient=ADA),)})
    assert not patients.reaches_every("Observation", "u")
    assert not patients.reaches_every("Consent", "u")
    assert patients.reaches_every("Organization", "u")


def test_a_granular_rule_or_another_types_or_permissions_rule_does_not() -> None:
    (clause,) = parse_query("Observation", [("category", "laboratory")]).clauses
    granular = Visibility({"u": (RowRule(res_type="Observation", clauses=(clause,)),)})
    assert not granular.reaches_every("Observation", "u")
    other_type = Visibility({"u": (RowRule(res_type="Condition"),)})
    assert not other_type.reaches_every("Observation", "u")
    read_only = Visibility({"r": (RowRule(),), "s": (RowRule(),)})
    assert not read_only.reaches_every("Observation", "u")
