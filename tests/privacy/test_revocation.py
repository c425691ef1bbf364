"""A decision binds tokens already issued, on the very next request, on every route (issue #5).

Tokens are minted first; the patient then decides (an opt-out, a deny for one purpose, a
deny for one recipient, a deny for the app acting for them), and the same tokens' next
requests — search, read, vread, history, $everything, _revinclude, counts — see the new
decision; making the Consent inactive (an update, not a delete) undoes it just as promptly.
(Refresh tokens: tests/auth/test_consent_and_refresh.py; shared links:
tests/share/test_link_consent.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from policy_matrix_data import app, consent, organization, purpose, rid, transaction

from secured import SecuredNode, secured_node

from support import FHIR_JSON

RAY = rid("ray")
RAY_OBS = f"{RAY}-obs"


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    records: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": RAY},
        {
            "resourceType": "Observation",
            "id": RAY_OBS,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{RAY}"},
        },
    ]
    bundle = transaction(records)
    with secured_node(database_url) as running:
        with running.client("system/*.cruds", client_id=rid("rev-loader")) as admin:
            assert admin.post("", json=bundle, headers=FHIR_JSON).status_code == 200
        yield running


@pytest.fixture(scope="module")
def tokens(node: SecuredNode) -> Iterator[dict[str, httpx.Client]]:
    """Every token is issued before any decision of the tests below."""
    specs = {
        "clinic": {
            "scope": "system/*.rs",
            "client_id": rid("rev-clinic"),
            "organization": "org-rev",
            "purpose_of_use": "TREAT",
        },
        "payer": {
            "scope": "system/*.rs",
            "client_id": rid("rev-payer"),
            "purpose_of_use": "HPAYMT",
        },
        "ray-app": {
            "scope": "patient/*.rs",
            "client_id": rid("rev-app"),
            "patient": RAY,
            "purpose_of_use": "PATRQT",
        },
        "ray-portal": {"scope": "patient/*.cruds", "client_id": rid("rev-portal"), "patient": RAY},
    }
    minted = node.tokens(list(specs.values()))
    clients = {
        name: httpx.Client(
            base_url=node.base,
            timeout=30,
            headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {bearer}"},
        )
        for name, bearer in zip(specs, minted, strict=True)
    }
    yield clients
    for c in clients.values():
        c.close()


def sees_ray(client: httpx.Client) -> dict[str, bool]:
    """Each route, whether it shows Ray's Observation (or Ray)."""

    def has(body: dict[str, Any], key: str) -> bool:
        return any(
            f"{e['resource']['resourceType']}/{e['resource']['id']}" == key
            for e in body.get("entry", [])
            if "resource" in e
        )

    obs = f"Observation/{RAY_OBS}"
    everything = client.get(f"/Patient/{RAY}/$everything", params={"_count": "1000"})
    return {
        "search": has(client.get("/Observation", params={"subject": RAY}).json(), obs),
        "read": client.get(f"/{obs}").status_code == 200,
        "vread": client.get(f"/{obs}/_history/1").status_code == 200,
        "history": has(client.get(f"/{obs}/_history").json(), obs)
        if client.get(f"/{obs}/_history").status_code == 200
        else False,
        "everything": everything.status_code == 200 and has(everything.json(), obs),
        "revinclude": has(
            client.get(
                "/Patient", params={"_id": RAY, "_revinclude": "Observation:subject"}
            ).json(),
            obs,
        ),
        "count": client.get("/Observation", params={"_id": RAY_OBS, "_summary": "count"}).json()[
            "total"
        ]
        == 1,
    }


ALL = dict.fromkeys(
    ("search", "read", "vread", "history", "everything", "revinclude", "count"), True
)
NONE = dict.fromkeys(ALL, False)


def _decide(portal: httpx.Client, provision: dict[str, Any]) -> dict[str, Any]:
    written = portal.post("/Consent", json=consent(RAY, provision), headers=FHIR_JSON)
    assert written.status_code == 201, written.text
    created: dict[str, Any] = written.json()
    return created


def _withdraw(portal: httpx.Client, decision: dict[str, Any]) -> None:
    inactive = {**decision, "status": "inactive"}
    assert (
        portal.put(f"/Consent/{decision['id']}", json=inactive, headers=FHIR_JSON).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("provision", "hidden_from"),
    [
        ({"type": "deny"}, {"clinic", "payer"}),
        ({"type": "deny", "purpose": purpose("HPAYMT")}, {"payer"}),
        ({"type": "deny", "actor": [organization("org-rev", by_reference=True)]}, {"clinic"}),
        (
            {"type": "permit", "provision": [{"type": "deny", "actor": [app(rid("rev-app"))]}]},
            {"ray-app"},
        ),
    ],
    ids=["opt-out", "deny-a-purpose", "deny-a-recipient", "deny-the-patients-own-app"],
)
def test_a_decision_binds_tokens_already_issued_on_every_route_and_withdrawing_it_too(
    tokens: dict[str, httpx.Client], provision: dict[str, Any], hidden_from: set[str]
) -> None:
    readers = ("clinic", "payer", "ray-app")

    def quick(name: str) -> bool:  # before and after: one search says enough
        found = tokens[name].get("/Observation", params={"_id": RAY_OBS}).json()
        return len(found.get("entry", [])) == 1

    assert all(quick(name) for name in readers)
    decision = _decide(tokens["ray-portal"], provision)
    try:
        after = {name: sees_ray(tokens[name]) for name in readers}
        assert after == {name: NONE if name in hidden_from else ALL for name in readers}
    finally:
        _withdraw(tokens["ray-portal"], decision)
    assert all(quick(name) for name in readers)
