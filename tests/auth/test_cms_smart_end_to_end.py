"""Portal-free patient access (cms_smart v1) end to end, with nothing stood in.

An app holds an IAL2 id_token from the node's test identity provider (signed with its keys,
in the CMS claim shape), nests it in a private_key_jwt client assertion, gets a
patient-scoped token from the token endpoint, and reads that patient's record — and only it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from auth_support import AppKey, backend_client, client_credentials_form

from healthmesh.auth.identity.test_idp import mint_ial2_id_token_sync
from healthmesh.auth.identity.test_idp.app import BUILTIN_CLIENT
from healthmesh.config import Settings

from conftest import ServerThread
from support import FHIR_JSON

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(database_url=database_url, open=False, test_identity_provider=True)
    with ServerThread(settings) as running:
        yield running


def _patient(family: str, given: str, birth: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"{given.lower()}-{RUN}",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": birth,
        "address": [
            {"line": ["12 Elm Street"], "city": "Boston", "state": "MA", "postalCode": "02115"}
        ],
    }


@pytest.fixture(scope="module")
def people(node: ServerThread, database_url: str) -> dict[str, dict[str, Any]]:
    key = AppKey()
    admin = backend_client(database_url, key, scope="system/*.cruds")
    form = client_credentials_form(admin, key, node.base, scope="system/*.cruds")
    token = httpx.post(f"{node.base}/auth/token", data=form).json()["access_token"]
    people = {
        "ada": _patient(f"Quillfeather{RUN}", "Adelind", "1961-04-09"),
        "bea": _patient(f"Marchbanks{RUN}", "Beatrix", "1975-11-30"),
    }
    records = [*people.values()]
    records += [
        {
            "resourceType": "Observation",
            "id": f"{name}-obs-{RUN}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{p['id']}"},
            "valueQuantity": {"value": 70, "unit": "kg"},
        }
        for name, p in people.items()
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in records
        ],
    }
    stored = httpx.post(
        node.base, json=bundle, headers={**FHIR_JSON, "Authorization": f"Bearer {token}"}
    )
    assert stored.status_code == 200, stored.text
    return people


def _issuer(node: ServerThread) -> str:
    parts = urlsplit(node.base)
    return f"{parts.scheme}://{parts.netloc}/idp"


def _cms_token(
    node: ServerThread, database_url: str, patient: dict[str, Any], **claims: Any
) -> httpx.Response:
    id_token = mint_ial2_id_token_sync(
        database_url, issuer=_issuer(node), audience=BUILTIN_CLIENT, patient=patient, **claims
    )
    key = AppKey("ES384")
    app = backend_client(
        database_url, key, scope="patient/*.rs", grant_types=("client_credentials",)
    )
    extensions = {"cms_smart": {"version": "1", "purpose_of_use": "PATRQT", "id_token": id_token}}
    form = client_credentials_form(app, key, node.base, scope="patient/*.rs", extensions=extensions)
    return httpx.post(f"{node.base}/auth/token", data=form)


def test_an_ial2_identity_gets_a_token_for_exactly_its_own_record(
    node: ServerThread, database_url: str, people: dict[str, dict[str, Any]]
) -> None:
    ada, bea = people["ada"], people["bea"]
    response = _cms_token(node, database_url, ada)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"] == ada["id"]
    assert response.headers["cache-control"] == "no-store"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    with httpx.Client(base_url=node.base, headers=headers, timeout=30) as fhir:
        own = fhir.get("/Observation", params={"code": "http://loinc.org|29463-7"}).json()
        assert {e["resource"]["id"] for e in own.get("entry", [])} == {f"ada-obs-{RUN}"}
        assert fhir.get(f"/Patient/{bea['id']}").status_code == 404
        assert fhir.get(f"/Patient/{ada['id']}").status_code == 200


def test_a_replayed_id_token_is_refused(
    node: ServerThread, database_url: str, people: dict[str, dict[str, Any]]
) -> None:
    jti = uuid.uuid4().hex
    assert _cms_token(node, database_url, people["ada"], jti=jti).status_code == 200
    again = _cms_token(node, database_url, people["ada"], jti=jti)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_an_identity_matching_nobody_is_refused_not_guessed(
    node: ServerThread, database_url: str, people: dict[str, dict[str, Any]]
) -> None:
    stranger = {
        **people["ada"],
        "id": f"nobody-{RUN}",
        "name": [{"family": "Nobody", "given": ["Zed"]}],
    }
    refused = _cms_token(node, database_url, stranger)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_an_id_token_below_ial2_is_refused(
    node: ServerThread, database_url: str, people: dict[str, dict[str, Any]]
) -> None:
    refused = _cms_token(node, database_url, people["bea"], identity_assurance_level=1)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
