"""The node as a SMART Health Card issuer, over real HTTP: cards from the patient's stored
immunizations and labs, verified by fetching the node's JWKS; revocation through the CRL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from share_support import (
    Patients,
    decode_qr_png,
    origin,
    register_client,
    secured_node,
    token,
)

from healthmesh.share import shc
from healthmesh.share.verify import CardRejected, CardVerifier, TrustedIssuer, VerifiedCard

from conftest import ServerThread

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


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


def _store_records(node: ServerThread, database_url: str, patient: str) -> None:
    def observation(oid: str, category: str, code: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": oid,
            "meta": {"tag": [{"system": "urn:t", "code": "x"}]},
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": "d"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-03-01",
            "valueQuantity": {"value": 5.4, "unit": "%", "system": "http://unitsofmeasure.org"},
        }

    records: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": patient,
            "name": [{"family": "Card", "given": ["Carla"]}],
            "birthDate": "1970-05-04",
            "telecom": [{"system": "phone", "value": "555-0100"}],
        },
        {
            "resourceType": "Immunization",
            "id": f"{patient}-flu",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "141"}]},
            "patient": {"reference": f"Patient/{patient}"},
            "occurrenceDateTime": "2025-10-01",
            "lotNumber": "L123",
        },
        observation(f"{patient}-a1c", "laboratory", "4548-4"),
        observation(f"{patient}-pulse", "vital-signs", "8867-4"),
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in records
        ],
    }
    admin = token(node, database_url, "system/*.cruds")
    response = httpx.post(
        node.base,
        json=bundle,
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/fhir+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text


def _verify(node: ServerThread, card: str) -> VerifiedCard:
    async def go() -> VerifiedCard:
        async with httpx.AsyncClient() as http:
            verifier = CardVerifier([TrustedIssuer(iss=f"{origin(node)}/shc")], http=http)
            return await verifier.verify(card)

    result: VerifiedCard = asyncio.run(go())
    return result


def test_immunization_and_lab_cards_verify_against_the_nodes_published_keys(
    node: ServerThread, database_url: str, as_patient: Patients
) -> None:
    patient = f"card-{uuid.uuid4().hex[:10]}"
    _store_records(node, database_url, patient)
    carla = as_patient(patient)

    shot = carla.post("/share/cards", json={"kind": "immunization"})
    assert shot.status_code == 201, shot.text
    card = shot.json()
    verified = _verify(node, card["jws"])
    assert verified.valid
    assert verified.rid == card["rid"]
    entries = verified.bundle["entry"]
    assert [e["fullUrl"] for e in entries] == ["resource:0", "resource:1"]
    assert entries[0]["resource"] == {
        "resourceType": "Patient",
        "name": [{"family": "Card", "given": ["Carla"]}],
        "birthDate": "1970-05-04",
    }
    assert entries[1]["resource"]["patient"] == {"reference": "resource:0"}
    assert "id" not in entries[1]["resource"]
    assert card["file"] == {"verifiableCredential": [card["jws"]]}
    assert shc.from_numeric([card["qr"]]) == card["jws"]
    png = carla.post("/share/qr", json={"card": card["jws"]})
    assert png.status_code == 200
    assert decode_qr_png(png.content) == card["qr"]

    labs = carla.post("/share/cards", json={"kind": "laboratory"}).json()
    lab_bundle = _verify(node, labs["jws"]).bundle
    observations = [e["resource"] for e in lab_bundle["entry"][1:]]
    assert [o["code"]["coding"][0]["code"] for o in observations] == ["4548-4"]  # no vitals
    assert all("meta" not in o and "display" not in o["code"]["coding"][0] for o in observations)


def test_a_revoked_card_is_listed_in_the_crl_and_reported_revoked(
    node: ServerThread, database_url: str, as_patient: Patients
) -> None:
    patient = f"card-{uuid.uuid4().hex[:10]}"
    _store_records(node, database_url, patient)
    carla = as_patient(patient)
    card = carla.post("/share/cards", json={"kind": "immunization"}).json()
    assert not _verify(node, card["jws"]).revoked
    kid = _kid(card["jws"])

    stranger = as_patient(f"card-{uuid.uuid4().hex[:10]}")
    assert stranger.post(f"/share/cards/{card['rid']}/revoke").status_code == 404
    assert carla.post(f"/share/cards/{card['rid']}/revoke").status_code == 200

    jwks = httpx.get(f"{origin(node)}/shc/.well-known/jwks.json")
    assert jwks.headers["access-control-allow-origin"] == "*"
    key = next(k for k in jwks.json()["keys"] if k["kid"] == kid)
    assert key["crlVersion"] >= 1
    assert key["alg"] == "ES256"
    assert key["crv"] == "P-256"
    crl = httpx.get(f"{origin(node)}/shc/.well-known/crl/{kid}.json").json()
    assert crl["method"] == "rid"
    assert card["rid"] in crl["rids"]
    assert crl["ctr"] == key["crlVersion"]
    assert _verify(node, card["jws"]).revoked
    listed = carla.get("/share/cards").json()["cards"]
    assert [c["rid"] for c in listed if "revoked" in c] == [card["rid"]]
    assert httpx.get(f"{origin(node)}/shc/.well-known/crl/unknown.json").status_code == 404


def test_cards_need_a_stored_patient_and_a_known_kind(as_patient: Patients) -> None:
    nobody = as_patient(f"card-{uuid.uuid4().hex[:10]}")
    assert nobody.post("/share/cards", json={"kind": "immunization"}).status_code == 400
    assert nobody.post("/share/cards", json={"kind": "x"}).status_code == 400


def test_a_card_from_another_node_is_not_trusted_by_ours(
    node: ServerThread, database_url: str, as_patient: Patients
) -> None:
    patient = f"card-{uuid.uuid4().hex[:10]}"
    _store_records(node, database_url, patient)
    card = as_patient(patient).post("/share/cards", json={"kind": "immunization"}).json()

    async def go() -> None:
        verifier = CardVerifier([TrustedIssuer(iss="https://elsewhere.example/shc")])
        await verifier.verify(card["jws"])

    with pytest.raises(CardRejected, match="not trusted"):
        asyncio.run(go())


def _kid(jws: str) -> str:
    import orjson

    from healthmesh.share.jwe import b64url_decode

    return str(orjson.loads(b64url_decode(jws.split(".")[0]))["kid"])
