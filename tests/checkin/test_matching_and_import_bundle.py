"""Pure parts: how candidates are graded, and the transaction Bundle an import sends."""

from __future__ import annotations

from typing import Any

from healthmesh.checkin.candidates import CHECKIN_SYSTEM, Candidate, grade, suggestion
from healthmesh.checkin.importer import PATAST, Importer, new_patient_key, transaction_bundle
from healthmesh.checkin.receive import Received, Source

SHARED: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:mrn", "value": "42"}],
    "name": [{"family": "Hopper", "given": ["Grace"]}],
    "birthDate": "1906-12-09",
    "gender": "female",
    "address": [{"line": ["1 Navy Yard"]}],
}


def _ours(**changes: Any) -> dict[str, Any]:
    return {**SHARED, "id": "ours", "identifier": [], **changes}


def test_grades_identifier_rule_fuzzy_and_name_only() -> None:
    assert grade(SHARED, {**_ours(), "identifier": SHARED["identifier"]}) == (
        "certain",
        "same identifier urn:mrn|42",
    )
    certain = grade(SHARED, _ours())
    assert certain is not None and certain[0] == "certain" and "street" in certain[1]
    fuzzy = grade(SHARED, _ours(name=[{"family": "Hoppre", "given": ["Grace"]}]))
    assert fuzzy is not None and fuzzy[0] == "probable"
    possible = grade(SHARED, _ours(address=[{"line": ["Somewhere else"]}]))
    assert possible == ("possible", "same name, birth date and gender")
    assert grade(SHARED, _ours(birthDate="1906-12-10", address=[])) is None
    assert grade(SHARED, _ours(gender="male", address=[])) is None


def _candidate(pid: str, how: str) -> Candidate:
    return Candidate(id=pid, grade=how, why="", name=None, birth_date=None, gender=None)


def test_only_a_single_certain_candidate_is_suggested() -> None:
    assert suggestion([_candidate("a", "certain"), _candidate("b", "possible")]) == "a"
    assert suggestion([_candidate("a", "certain"), _candidate("b", "certain")]) is None
    assert suggestion([_candidate("a", "probable")]) is None
    assert suggestion([]) is None


def _received() -> Received:
    entries: list[tuple[str, dict[str, Any]]] = [
        ("urn:uuid:p", SHARED),
        ("urn:uuid:doc", {"resourceType": "Practitioner", "name": [{"family": "Welby"}]}),
        (
            "urn:uuid:c",
            {
                "resourceType": "Condition",
                "id": "sender-id",
                "meta": {"versionId": "3", "security": [{"system": "s", "code": "R"}]},
                "code": {"text": "Gout"},
                "subject": {"reference": "urn:uuid:p"},
                "asserter": {"reference": "urn:uuid:doc"},
            },
        ),
        ("urn:uuid:o", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    return Received(source=Source(kind="shl", digest="d" * 64), bundle=bundle, entries=entries)


def test_the_import_bundle_links_labels_and_keys_every_resource() -> None:
    bundle, provenance = transaction_bundle(
        _received(), patient_id="p1", importer=Importer(fhir_user=None, client_id="desk")
    )
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Condition", "Provenance"]  # Practitioner, Observation: not persisted
    condition = bundle["entry"][0]["resource"]
    assert "id" not in condition and "versionId" not in condition["meta"]
    assert condition["meta"]["security"] == [{"system": "s", "code": "R"}, PATAST]
    assert condition["subject"] == {"reference": "Patient/p1"}
    assert condition["asserter"] == {"display": "Welby (Practitioner, as shared)"}
    key = condition["identifier"][0]
    assert key["system"] == CHECKIN_SYSTEM
    assert (
        bundle["entry"][0]["request"]["ifNoneExist"]
        == f"identifier={CHECKIN_SYSTEM}|{key['value']}"
    )
    assert [t["reference"] for t in provenance["target"]] == ["Patient/p1", "urn:uuid:c"]
    assert provenance["agent"][1]["who"] == {"display": "front desk (client desk)"}
    again, _ = transaction_bundle(
        _received(), patient_id="p1", importer=Importer(fhir_user=None, client_id="desk")
    )
    assert again["entry"][0]["resource"]["identifier"] == condition["identifier"]
    other, _ = transaction_bundle(
        _received(), patient_id="p2", importer=Importer(fhir_user=None, client_id="desk")
    )
    assert other["entry"][0]["resource"]["identifier"] != condition["identifier"]


def test_a_patient_created_from_this_share_keeps_the_keys_of_that_first_import() -> None:
    received = _received()
    first, _ = transaction_bundle(
        received, patient_id=None, importer=Importer(fhir_user="Practitioner/9", client_id="d")
    )
    assert first["entry"][0]["resource"]["resourceType"] == "Patient"
    created = {"identifier": [{"system": CHECKIN_SYSTEM, "value": new_patient_key(received)}]}
    onto, provenance = transaction_bundle(
        received,
        patient_id="made",
        importer=Importer(fhir_user=None, client_id="d"),
        chosen=created,
    )
    assert onto["entry"][0]["resource"]["identifier"] == first["entry"][1]["resource"]["identifier"]
    assert onto["entry"][-1]["request"] == first["entry"][-1]["request"]  # the same Provenance
    assert provenance["target"][0] == {"reference": "Patient/made"}
