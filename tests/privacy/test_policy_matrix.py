"""The policy matrix: patients × recipients × data categories × purposes × sensitivity classes.

Each patient (tests/privacy/policy_matrix_data.py) holds one resource per data category and
sensitivity class and has written their own Consents with their own token; every recipient
— organizations' backends for each purpose, a practitioner's EHR, a researcher, a marketer,
the patient's own app, an app the patient may have denied, a practitioner's app launched
with the patient in context — asks through the HTTP API with a real token, under both
deployment defaults (opt-out and opt-in). Search, counts, totals and reads must agree with
the independent model of docs/privacy.md in tests/privacy/policy_oracle.py for every
(recipient, resource) pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from policy_matrix_data import (
    REFERENCE_DATA,
    SEED,
    Recipient,
    all_scenarios,
    for_patient,
    organizations,
    record,
    rid,
    transaction,
)
from policy_oracle import Oracle, Row

from secured import SecuredNode, secured_node

from conftest import ServerThread
from support import FHIR_JSON


@dataclass
class World:
    nodes: dict[str, SecuredNode]  # "opt-out" | "opt-in"
    rows: dict[str, Row]  # Type/id -> the row as stored (labels read back)
    consents: dict[str, list[dict[str, Any]]]  # patient -> their Consents as stored
    recipients: list[Recipient]
    clients: dict[tuple[str, str], httpx.Client]

    def client(self, mode: str, recipient: Recipient) -> httpx.Client:
        key = (mode, recipient.access.name)
        if key not in self.clients:
            self.connect(mode, [recipient])
        return self.clients[key]

    def connect(self, mode: str, recipients: list[Recipient]) -> None:
        """Clients with real tokens for ``recipients``, minted in one go."""
        node = self.nodes[mode]
        tokens = node.tokens(
            [
                {
                    "scope": r.scope,
                    "client_id": r.client_id,
                    "organization": r.organization,
                    "fhir_user": r.fhir_user,
                    "patient": r.patient,
                    "purpose_of_use": r.access.purpose,
                }
                for r in recipients
            ]
        )
        for recipient, token in zip(recipients, tokens, strict=True):
            self.clients[(mode, recipient.access.name)] = httpx.Client(
                base_url=node.base,
                timeout=30,
                headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {token}"},
            )

    def oracle(self, mode: str) -> Oracle:
        return Oracle(self.consents, default_permit=mode == "opt-out")

    def expected(self, mode: str, recipient: Recipient) -> set[str]:
        oracle = self.oracle(mode)
        return {k for k, row in self.rows.items() if oracle.visible(recipient.access, row)}

    @property
    def ids(self) -> str:
        return ",".join(row.id for row in self.rows.values())


def _row(resource: dict[str, Any], patient: str | None) -> Row:
    codes = {
        c["code"]
        for concept in resource.get("category", [])
        if isinstance(concept, dict)
        for c in concept.get("coding", [])
    }
    stored_labels = {s["code"] for s in resource.get("meta", {}).get("security", [])}
    return Row(
        resource["resourceType"],
        resource["id"],
        patient,
        frozenset(codes),
        frozenset(stored_labels),
    )


@pytest.fixture(scope="module")
def world(database_url: str, server: ServerThread) -> Iterator[World]:
    scenarios = all_scenarios()
    patients = {rid(f"pm{n}"): name for n, name in enumerate(scenarios)}
    with (
        secured_node(database_url) as opt_out,
        secured_node(database_url, consent_default="opt-in") as opt_in,
    ):
        records = [r for p in patients for r in record(p)] + REFERENCE_DATA
        with opt_out.client("system/*.cruds", client_id=rid("loader")) as admin:
            loaded = admin.post("", json=transaction(records), headers=FHIR_JSON)
            assert loaded.status_code == 200, loaded.text
        recipients = organizations() + [r for p in patients for r in for_patient(p)]
        world = World({"opt-out": opt_out, "opt-in": opt_in}, {}, {}, recipients, {})
        for mode in MODES:
            world.connect(mode, recipients)
        # Each patient writes their own Consents, with their own app's token, in one
        # transaction of their own.
        for patient, name in patients.items():
            consents = scenarios[name](patient)
            if consents:
                own = next(r for r in recipients if r.access.name == f"own-app/{patient}")
                written = world.client("opt-out", own).post(
                    "", json=transaction(consents, "POST"), headers=FHIR_JSON
                )
                assert written.status_code == 200, f"{name}: {written.text}"
        # The oracle's input is what was stored: labels as labelled at write time, Consents
        # as kept. Read back without any policy, through the --open server.
        with httpx.Client(base_url=server.base, timeout=30) as open_fhir:
            ids = [r["id"] for r in records]
            stored = open_fhir.get("", params={"_id": ",".join(ids), "_count": "1000"}).json()
            owners = {r["id"]: p for p in patients for r in record(p)}
            for entry in stored["entry"]:
                resource = entry["resource"]
                row = _row(resource, owners.get(resource["id"]))
                world.rows[row.key] = row
            for patient in patients:
                found = open_fhir.get("/Consent", params={"patient": patient}).json()
                world.consents[patient] = [e["resource"] for e in found.get("entry", [])]
                for consent in world.consents[patient]:
                    world.rows[f"Consent/{consent['id']}"] = Row("Consent", consent["id"], patient)
        assert len(world.rows) >= len(records)
        try:
            yield world
        finally:
            for c in world.clients.values():
                c.close()


MODES = ["opt-out", "opt-in"]


def _disagreements(world: World, mode: str, check: Any) -> list[str]:
    problems: list[str] = []
    for recipient in world.recipients:
        problems.extend(
            check(world.client(mode, recipient), recipient, world.expected(mode, recipient))
        )
    return problems


def _report(problems: list[str]) -> str:
    head = f"{len(problems)} disagreements with the oracle (HEALTHMESH_POLICY_SEED={SEED}):\n"
    return head + "\n".join(problems[:40])


def test_the_stored_labels_are_the_ones_the_matrix_needs(world: World) -> None:
    # The matrix covers sensitivity classes only if the labels are really there.
    patient = rid("pm0")
    assert {"ETH", "R"} <= world.rows[f"Condition/{patient}-alcohol"].labels
    assert "HIV" in world.rows[f"Observation/{patient}-hiv-lab"].labels
    assert "PSY" in world.rows[f"DocumentReference/{patient}-therapy-note"].labels
    assert not world.rows[f"Condition/{patient}-asthma"].labels


@pytest.mark.parametrize("mode", MODES)
def test_system_search_returns_exactly_what_the_consents_allow(world: World, mode: str) -> None:
    def check(client: httpx.Client, recipient: Recipient, expected: set[str]) -> list[str]:
        response = client.get("", params={"_id": world.ids, "_count": "1000"})
        assert response.status_code == 200, response.text
        got = {
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in response.json().get("entry", [])
        }
        name = recipient.access.name
        return [f"{name}: search shows {k}" for k in sorted(got - expected)] + [
            f"{name}: search hides {k}" for k in sorted(expected - got)
        ]

    problems = _disagreements(world, mode, check)
    assert not problems, _report(problems)


@pytest.mark.parametrize("mode", MODES)
def test_counts_and_totals_count_only_what_the_consents_allow(world: World, mode: str) -> None:
    def check(client: httpx.Client, recipient: Recipient, expected: set[str]) -> list[str]:
        name, problems = recipient.access.name, []
        count = client.get("", params={"_id": world.ids, "_summary": "count"}).json()["total"]
        if count != len(expected):
            problems.append(f"{name}: _summary=count {count}, expected {len(expected)}")
        observations = [k for k in expected if k.startswith("Observation/")]
        ids = ",".join(r.id for k, r in world.rows.items() if k.startswith("Observation/"))
        total = client.get(
            "/Observation", params={"_id": ids, "_total": "accurate", "_count": "1"}
        ).json()["total"]
        if total != len(observations):
            problems.append(f"{name}: Observation _total {total}, expected {len(observations)}")
        alone = client.get("/Observation", params={"_id": ids, "_count": "0"}).json()["total"]
        if alone != len(observations):
            problems.append(
                f"{name}: Observation _count=0 total {alone}, expected {len(observations)}"
            )
        return problems

    problems = _disagreements(world, mode, check)
    assert not problems, _report(problems)


@pytest.mark.parametrize("mode", MODES)
def test_reads_answer_404_exactly_for_what_the_consents_withhold(world: World, mode: str) -> None:
    # Reads are one request a row: each recipient reads a different stride of the rows it
    # could reach by scope (ten for organizations, one for a patient's apps), so that
    # together they read every row, in each mode at other offsets.
    def check(client: httpx.Client, recipient: Recipient, expected: set[str]) -> list[str]:
        patient = recipient.access.scope_patient
        keys = sorted(k for k, r in world.rows.items() if patient in (None, r.patient))
        n = world.recipients.index(recipient) * 7 + MODES.index(mode) * 3
        stride = max(1, len(keys) // (10 if patient is None else 1))
        problems = []
        for key in keys[n % stride :: stride]:
            status = client.get(f"/{key}").status_code
            want = 200 if key in expected else 404
            if status != want:
                problems.append(f"{recipient.access.name}: read {key} -> {status}, expected {want}")
        return problems

    problems = _disagreements(world, mode, check)
    assert not problems, _report(problems)


def test_the_matrix_decides_each_patients_record_both_ways(world: World) -> None:
    # A matrix where a patient's record was shown to everyone (or no one) would prove
    # little: for every patient some recipient sees part of the record and some misses part.
    oracle = world.oracle("opt-out")
    for patient in world.consents:
        rows = [r for r in world.rows.values() if r.patient == patient]
        answers = {oracle.visible(x.access, row) for x in world.recipients for row in rows}
        assert answers == {True, False}, patient
