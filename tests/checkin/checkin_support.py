"""A sending node with a patient's record and a receiving clinic node, on two databases.

The sender is a real HealthMesh (its own /share API makes the links); the clinic is another
HealthMesh with the check-in enabled for plain http on loopback (``allow_insecure``), the way
a one-machine demo runs. Staff and patient tokens are minted by each node's own
authorization server (tests/secured.py).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from healthmesh.checkin.settings import CheckinSettings
from healthmesh.config import Settings
from secured import SecuredNode

from conftest import ServerThread, scratch_database
from support import FHIR_JSON

STAFF_SCOPE = "user/*.crs"
POOL = 4  # connections per node: the PostgreSQL the suites share has 100 for everyone
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
MRN = "urn:oid:2.16.840.1.113883.19.5"


def minimal_pdf(text: str = "My story") -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]"
        b"/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%" + text.encode() + b"\n%%EOF\n"
    )


def off_loop(mint: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """``mint(...)`` in a thread of its own: SecuredNode.token uses asyncio.run, which cannot
    run inside Playwright's sync API (it keeps an event loop in the test's thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(mint, *args, **kwargs).result()


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


@dataclass
class Person:
    patient_id: str
    mrn: str
    family: str
    given: str
    birth_date: str


def record(run: str) -> tuple[Person, list[dict[str, Any]]]:
    """A patient with something for every check-in line, in PUT order."""
    pid, mrn = f"ada-{run}", f"MRN-{run}"
    family = f"Lovelace{run[:4]}"
    person = Person(pid, mrn, family, "Ada", "1985-12-10")
    a = {"reference": f"Patient/{pid}"}
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": f"payer-{run}", "name": "Acme Health Plan"},
        {"resourceType": "Practitioner", "id": f"doc-{run}", "name": [{"family": "Welby"}]},
        {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": ["Ada"]}],
            "gender": "female",
            "birthDate": person.birth_date,
            "address": [{"line": ["1 Analytical Way"], "city": "London", "postalCode": "W1"}],
        },
        {
            "resourceType": "Coverage",
            "id": f"cov-{run}",
            "status": "active",
            "subscriberId": f"MEMBER-{run}",
            "beneficiary": a,
            "payor": [{"reference": f"Organization/payer-{run}"}],
            "class": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                                "code": "group",
                            }
                        ]
                    },
                    "value": "G-42",
                }
            ],
        },
        {
            "resourceType": "Condition",
            "id": f"asthma-{run}",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": _concept(SNOMED, "195967001", "Asthma"),
            "subject": a,
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": f"peanut-{run}",
            "criticality": "high",
            "code": _concept(SNOMED, "91935009", "Allergy to peanut"),
            "patient": a,
        },
        {
            "resourceType": "Medication",
            "id": f"salbutamol-{run}",
            "code": _concept(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "245314", "Salbutamol inhaler"
            ),
        },
        {
            "resourceType": "MedicationStatement",
            "id": f"takes-{run}",
            "status": "active",
            "medicationReference": {"reference": f"Medication/salbutamol-{run}"},
            "subject": a,
        },
        {
            "resourceType": "Immunization",
            "id": f"flu-shot-{run}",
            "status": "completed",
            "vaccineCode": _concept("http://hl7.org/fhir/sid/cvx", "140", "Influenza vaccine"),
            "patient": a,
            "occurrenceDateTime": "2025-10-01",
            "performer": [{"actor": {"reference": f"Practitioner/doc-{run}"}}],
        },
    ]
    return person, resources


def put_all(client: httpx.Client, resources: list[dict[str, Any]]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    answer = client.post("", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text


class Sender:
    """The patient's node: makes links to the patient's own PatientSharedBundle."""

    def __init__(self, node: SecuredNode, person: Person) -> None:
        self.node, self.person = node, person
        self.origin = f"http://127.0.0.1:{node.server.port}"
        bearer = off_loop(
            node.token,
            "patient/*.rs launch/patient",
            client_id="checkin-patient-app",
            patient=person.patient_id,
            fhir_user=f"Patient/{person.patient_id}",
        )
        self.http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {bearer}"})

    def shared_bundle(self) -> dict[str, Any]:
        story = {
            "name": "document",
            "valueAttachment": {
                "contentType": "application/pdf",
                "data": base64.b64encode(minimal_pdf()).decode(),
                "title": "My asthma story",
            },
        }
        answer = self.http.post(
            f"{self.node.base}/Patient/{self.person.patient_id}/$shared-bundle",
            json={"resourceType": "Parameters", "parameter": [story]},
            headers=FHIR_JSON,
        )
        assert answer.status_code == 200, answer.text
        bundle: dict[str, Any] = answer.json()
        return bundle

    def link(self, flag: str = "U", **extra: Any) -> tuple[str, str]:
        """(shlink, link id) of a new link to the patient's shared bundle."""
        body = {
            "bundle": self.shared_bundle(),
            "flag": flag,
            "exp": int(time.time()) + 3600,
            "label": "Check-in at Example Clinic",
            **extra,
        }
        answer = self.http.post(f"{self.origin}/share/links", json=body)
        assert answer.status_code == 201, answer.text
        made = answer.json()
        return made["shlink"], made["link"]["id"]

    def revoke(self, link_id: str) -> None:
        answer = self.http.post(f"{self.origin}/share/links/{link_id}/revoke")
        assert answer.status_code == 200, answer.text


class Clinic:
    """The receiving node and a front-desk client for its check-in API."""

    def __init__(self, node: SecuredNode) -> None:
        self.node = node
        self.origin = f"http://127.0.0.1:{node.server.port}"
        self.token = off_loop(node.token, STAFF_SCOPE, client_id="front-desk")
        self.http = httpx.Client(
            base_url=self.origin, timeout=60, headers={"Authorization": f"Bearer {self.token}"}
        )

    def scan(self, **body: Any) -> httpx.Response:
        return self.http.post("/checkin/api/scan", json=body)

    def import_(self, **body: Any) -> httpx.Response:
        return self.http.post("/checkin/api/import", json=body)

    def fhir(self, path: str, **params: Any) -> dict[str, Any]:
        answer = self.http.get(f"/fhir/{path}", params=params)
        assert answer.status_code == 200, answer.text
        value: dict[str, Any] = answer.json()
        return value


def clinic_settings(database_url: str, **checkin: Any) -> Settings:
    return Settings(
        database_url=database_url,
        open=False,
        pool_size=POOL,
        checkin=CheckinSettings(allow_insecure=True, **checkin),
    )


def reason(answer: httpx.Response) -> str:
    issue = answer.json()["issue"][0]
    return str(issue["details"]["coding"][0]["code"])


def running(settings: Settings) -> ServerThread:
    return ServerThread(settings)


@dataclass
class Nodes:
    sender: SecuredNode
    clinic: SecuredNode
    loader: ServerThread  # the open server on the sender's database, to write records

    def person(self) -> Sender:
        person, resources = record(uuid.uuid4().hex[:10])
        with httpx.Client(base_url=self.loader.base, timeout=30) as http:
            put_all(http, resources)
        return Sender(self.sender, person)


@contextmanager
def two_nodes(admin_url: str, database_url: str, loader: ServerThread) -> Iterator[Nodes]:
    """A secured sender on the worker's database and a clinic on a database of its own."""
    with ServerThread(Settings(database_url=database_url, open=False, pool_size=POOL)) as sender:
        sender_issuer = f"http://127.0.0.1:{sender.port}/shc"
        with (
            scratch_database(admin_url, "hm_checkin") as clinic_url,
            ServerThread(
                clinic_settings(clinic_url, trusted_issuers=("self", sender_issuer))
            ) as clinic,
        ):
            yield Nodes(SecuredNode(sender, database_url), SecuredNode(clinic, clinic_url), loader)
