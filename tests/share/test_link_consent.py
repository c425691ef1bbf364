"""A patient's Consents bind their shared links on the very next request (issue #5).

A link made before the decision stops serving — its manifest, its direct (U) file and the
file locations already handed out — when the patient opts out, denies the purpose a link
serves (PATRQT, patient requested) or denies part of the record; a deny for some other
purpose or for one named app leaves it alone; revoking the Consent brings it back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from share_support import Patients, register_client, secured_node, token

from healthmesh.fhir.consent import CATEGORY_SYSTEM, CLIENT_ID_SYSTEM, PURPOSE_SYSTEM
from healthmesh.share.shl import decode

from conftest import ServerThread

SCOPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    with secured_node(database_url) as running:
        register_client(database_url)
        yield running


@pytest.fixture
def as_patient(node: ServerThread, database_url: str) -> Iterator[Patients]:
    patients = Patients(node, database_url)
    yield patients
    patients.close()


class Owner:
    """A patient with a link (U flag: manifest and direct GET) and their Consents."""

    def __init__(self, node: ServerThread, database_url: str, as_patient: Patients) -> None:
        self.patient = f"pt-{uuid.uuid4().hex[:10]}"
        sharing = as_patient(self.patient)
        body = {
            "bundle": {"resourceType": "Bundle", "type": "collection"},
            "flag": "U",
            "exp": int(time.time()) + 3600,
        }
        created = sharing.post("/share/links", json=body)
        assert created.status_code == 201, created.text
        self.link = decode(created.json()["shlink"])
        self.link_id = created.json()["link"]["id"]
        self.sharing = sharing
        bearer = token(node, database_url, "patient/Consent.cud", patient=self.patient)
        self.fhir = httpx.Client(
            base_url=node.base, timeout=30, headers={"Authorization": f"Bearer {bearer}"}
        )

    def consent(self, provision: dict[str, Any]) -> str:
        body = {
            "resourceType": "Consent",
            "status": "active",
            "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{self.patient}"},
            "provision": provision,
        }
        written = self.fhir.post("/Consent", json=body, headers=FHIR_JSON)
        assert written.status_code == 201, written.text
        return str(written.json()["id"])

    def revoke(self, consent_id: str) -> None:
        assert self.fhir.delete(f"/Consent/{consent_id}").status_code in (200, 204)

    def manifest(self) -> httpx.Response:
        return httpx.post(self.link.url, json={"recipient": "Front desk"}, timeout=30)

    def direct(self) -> httpx.Response:
        return httpx.get(self.link.url, params={"recipient": "Front desk"}, timeout=30)

    def serves(self) -> bool:
        manifest, direct = self.manifest(), self.direct()
        assert manifest.status_code == direct.status_code, (manifest.text, direct.text)
        assert manifest.status_code in (200, 404), manifest.text
        return manifest.status_code == 200

    def close(self) -> None:
        self.fhir.close()


@pytest.fixture
def owner(node: ServerThread, database_url: str, as_patient: Patients) -> Iterator[Owner]:
    o = Owner(node, database_url, as_patient)
    yield o
    o.close()


def test_an_opt_out_stops_a_link_on_the_next_request_and_revoking_it_restores_the_link(
    owner: Owner,
) -> None:
    assert owner.serves()
    location = owner.manifest().json()["files"][0]["location"]  # handed out before
    opt_out = owner.consent({"type": "deny"})
    assert not owner.serves()
    assert httpx.get(location, timeout=30).status_code == 404
    refused = owner.manifest()
    assert refused.headers["content-type"].startswith("application/json")
    owner.revoke(opt_out)
    assert owner.serves()
    assert httpx.get(location, timeout=30).status_code == 200


def test_a_deny_of_the_purpose_links_serve_stops_them(owner: Owner) -> None:
    owner.consent({"type": "deny", "purpose": [{"system": PURPOSE_SYSTEM, "code": "PATRQT"}]})
    assert not owner.serves()


def test_a_deny_of_part_of_the_record_stops_links_that_may_hold_it(owner: Owner) -> None:
    owner.consent(
        {
            "type": "permit",
            "provision": [
                {
                    "type": "deny",
                    "code": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "labs"}]}],
                }
            ],
        }
    )
    assert not owner.serves()


def test_denies_for_other_purposes_or_one_app_leave_links_serving(owner: Owner) -> None:
    owner.consent({"type": "deny", "purpose": [{"system": PURPOSE_SYSTEM, "code": "HPAYMT"}]})
    recipient = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
        ]
    }
    app = {
        "role": recipient,
        "reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": "some-app"}},
    }
    owner.consent({"type": "deny", "actor": [app]})
    owner.consent({"type": "deny", "period": {"start": "2019-01-01", "end": "2020-12-31"}})
    assert owner.serves()


def test_a_permit_for_patient_requested_sharing_keeps_links_serving_under_an_opt_out(
    owner: Owner,
) -> None:
    owner.consent(
        {
            "type": "deny",
            "provision": [
                {"type": "permit", "purpose": [{"system": PURPOSE_SYSTEM, "code": "PATRQT"}]}
            ],
        }
    )
    assert owner.serves()


def test_the_owner_sees_the_refused_accesses_in_the_link_log(owner: Owner) -> None:
    owner.consent({"type": "deny"})
    assert not owner.serves()
    accesses = owner.sharing.get(f"/share/links/{owner.link_id}/accesses").json()["accesses"]
    assert {a["outcome"] for a in accesses} == {"withheld"}
    assert {a["kind"] for a in accesses} == {"manifest", "direct"}
