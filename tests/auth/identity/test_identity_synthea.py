"""On the Synthea people of ../shared/data: each test IdP identity matches exactly its own
Patient, and a sibling-like variant (another first name) matches nobody."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from healthmesh.auth.identity import read_claims
from healthmesh.auth.identity.matching import decide, demographics_of_claims
from healthmesh.auth.identity.test_idp import claims_of_patient
from identity_support import ial2_claims

from support import SYNTHEA

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def patients() -> list[dict[str, Any]]:
    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data/synthea is not present")
    found = []
    for path in sorted(SYNTHEA.glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "Patient":
                found.append(resource)
    assert found
    return found


def _query(patient: dict[str, Any], **overrides: Any) -> Any:
    person = {**claims_of_patient(patient), **overrides}
    blank = {k: None for k in ("given_name", "family_name", "email", "address", "ssn_itin_short")}
    return demographics_of_claims(read_claims(ial2_claims(**{**blank, **person})))


def test_every_synthea_person_matches_exactly_their_own_patient(
    patients: list[dict[str, Any]],
) -> None:
    candidates = [(str(p["id"]), p) for p in patients]
    outcomes = [decide(_query(p), candidates).patient_id == p["id"] for p in patients]
    assert all(outcomes), f"{outcomes.count(False)} of {len(outcomes)} did not match themselves"


def test_a_different_first_name_matches_nobody(patients: list[dict[str, Any]]) -> None:
    candidates = [(str(p["id"]), p) for p in patients]
    decisions = [decide(_query(p, given_name="Zebedee"), candidates) for p in patients]
    assert {d.outcome for d in decisions} == {"no_match"}
