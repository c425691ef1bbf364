"""Patient/[id]/$summary through real HTTP: an IPS document that passes the IPS structural rules,
with the right content in each section, and nothing the caller may not see."""

from __future__ import annotations

import asyncio
import copy
import gzip
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from ips_records import Ids, ada_record, carried, put_all, section
from ips_rules import ips_problems, references
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.clients import Client
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings
from healthmesh.fhir.validation import validate_resource
from healthmesh.load.loader import Loader
from healthmesh.store.repository import Repository

from conftest import ServerThread
from support import FHIR_JSON

SAMPLE = Path(__file__).resolve().parents[2] / "src/healthmesh/load/sample/synthea-sample.ndjson.gz"
PROBLEMS, ALLERGIES, MEDICATIONS = "11450-4", "48765-2", "10160-0"


@pytest.fixture(scope="module")
def ids(client_module: httpx.Client) -> Ids:
    made = Ids()
    put_all(client_module, ada_record(made))
    return made


@pytest.fixture(scope="module")
def client_module(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base, timeout=60, headers={"Accept": "application/fhir+json"}
    ) as c:
        yield c


def summary(client: httpx.Client, patient: str) -> dict[str, Any]:
    response = client.get(f"/Patient/{patient}/$summary")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def entry_keys(bundle: dict[str, Any], code: str) -> set[str]:
    found = section(bundle, code)
    return {"/".join(e["reference"].split("/")[-2:]) for e in (found or {}).get("entry", [])}


def test_summary_of_a_full_record_passes_the_ips_rules_and_r4_structure(
    client_module: httpx.Client, ids: Ids
) -> None:
    bundle = summary(client_module, ids("ada"))
    assert ips_problems(bundle) == []
    assert validate_resource(bundle) == []
    codes = [s["code"]["coding"][0]["code"] for s in bundle["entry"][0]["resource"]["section"]]
    assert codes == [
        PROBLEMS,
        ALLERGIES,
        MEDICATIONS,
        "11348-0",
        "11369-6",
        "30954-2",
        "8716-3",
        "47519-4",
        "46264-8",
        "29762-2",
        "18776-5",
    ]
    composition = bundle["entry"][0]["resource"]
    assert composition["status"] == "final"
    assert composition["subject"]["reference"].endswith(f"/Patient/{ids('ada')}")
    assert bundle["entry"][1]["resource"]["id"] == ids("ada")


def test_sections_list_current_data_and_leave_out_errors_and_history(
    client_module: httpx.Client, ids: Ids
) -> None:
    bundle = summary(client_module, ids("ada"))
    assert entry_keys(bundle, PROBLEMS) == {f"Condition/{ids('asthma')}"}
    assert entry_keys(bundle, "11348-0") == {f"Condition/{ids('flu')}"}
    assert entry_keys(bundle, ALLERGIES) == {f"AllergyIntolerance/{ids('peanut')}"}
    assert entry_keys(bundle, MEDICATIONS) == {
        f"MedicationStatement/{ids('takes-salbutamol')}",
        f"MedicationRequest/{ids('current-rx')}",
    }
    # the latest HbA1c, the lipid panel with its LDL; not the older HbA1c
    assert entry_keys(bundle, "30954-2") == {
        f"Observation/{ids('a1c-new')}",
        f"Observation/{ids('ldl')}",
        f"DiagnosticReport/{ids('panel')}",
    }
    assert entry_keys(bundle, "46264-8") == {
        f"DeviceUseStatement/{ids('uses-pump')}",
        f"Device/{ids('pump')}",
    }
    held = carried(bundle)
    for absent in ("mistake", "old-rx", "a1c-old", "gout", "bob", "visit", "coverage"):
        assert not [k for k in held if k.endswith(f"/{ids(absent)}")], absent
    # reference data the entries point at comes along: the Medication, the GP
    assert f"Medication/{ids('salbutamol')}" in held
    assert f"Practitioner/{ids('doc')}" in held


def test_narratives_are_tables_of_what_the_sections_list(
    client_module: httpx.Client, ids: Ids
) -> None:
    bundle = summary(client_module, ids("ada"))
    problems = section(bundle, PROBLEMS)
    medications = section(bundle, MEDICATIONS)
    vitals = section(bundle, "8716-3")
    assert problems is not None and medications is not None and vitals is not None
    assert "<table>" in problems["text"]["div"] and "<td>Asthma</td>" in problems["text"]["div"]
    assert "Leprosy" not in problems["text"]["div"]
    # a Medication reached through medicationReference is named in the table
    assert "Salbutamol inhaler" in medications["text"]["div"]
    assert "2 puffs when needed" in medications["text"]["div"]
    assert "Systolic 118 mmHg; Diastolic 76 mmHg" in vitals["text"]["div"]


def test_references_the_summary_does_not_carry_keep_only_their_display(
    client_module: httpx.Client, ids: Ids
) -> None:
    bundle = summary(client_module, ids("ada"))
    held = carried(bundle)
    asthma = held[f"Condition/{ids('asthma')}"]
    assert "encounter" not in asthma  # the Encounter is not in a summary: no dangling reference
    assert asthma["asserter"] == {"display": "Bob Builder"}  # another patient, by name only
    bp = held[f"Observation/{ids('bp')}"]
    assert "performer" not in bp  # on another server
    plan = held[f"CarePlan/{ids('plan')}"]
    assert plan["addresses"] == [{"reference": f"Condition/{ids('asthma')}"}]
    every = [ref for e in bundle["entry"] for _, ref in references(e["resource"])]
    assert every and not [r for r in every if "elsewhere.example" in r or ids("bob") in r]


def test_a_patient_named_in_anothers_record_does_not_get_it_in_their_summary(
    client_module: httpx.Client, ids: Ids
) -> None:
    """Ada's asthma names Bob as asserter, which puts it in Bob's compartment; it is still
    Ada's problem, not Bob's."""
    bundle = summary(client_module, ids("bob"))
    assert ips_problems(bundle) == []
    assert entry_keys(bundle, PROBLEMS) == {f"Condition/{ids('gout')}"}
    assert not [k for k in carried(bundle) if ids("ada") in k or ids("asthma") in k]


def test_empty_required_sections_say_that_no_information_is_known(
    client_module: httpx.Client,
) -> None:
    pid = f"empty-{uuid.uuid4().hex[:8]}"
    put_all(client_module, [{"resourceType": "Patient", "id": pid, "gender": "unknown"}])
    bundle = summary(client_module, pid)
    assert ips_problems(bundle) == []
    sections = bundle["entry"][0]["resource"]["section"]
    assert [s["code"]["coding"][0]["code"] for s in sections] == [PROBLEMS, ALLERGIES, MEDICATIONS]
    for s in sections:
        assert "entry" not in s
        assert s["emptyReason"]["coding"][0]["code"] == "unavailable"
        assert "No information is known" in s["text"]["div"]
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Composition", "Patient", "Device"]  # the Device is the author


def test_summary_by_post_and_the_profile_parameter(client_module: httpx.Client, ids: Ids) -> None:
    ips = "http://hl7.org/fhir/uv/ips/StructureDefinition/Bundle-uv-ips"
    path = f"/Patient/{ids('ada')}/$summary"
    posted = client_module.post(
        path,
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "profile", "valueCanonical": ips}],
        },
        headers=FHIR_JSON,
    )
    assert posted.status_code == 200 and ips_problems(posted.json()) == []
    assert client_module.get(path, params={"profile": ips}).status_code == 200
    other = client_module.get(path, params={"profile": "http://example.org/other"})
    assert other.status_code == 400
    assert other.json()["resourceType"] == "OperationOutcome"
    wrong_body = client_module.post(
        path, json={"resourceType": "Basic", "code": {"text": "x"}}, headers=FHIR_JSON
    )
    assert wrong_body.status_code == 400
    assert client_module.delete(path).status_code == 405


def test_summary_of_an_unknown_or_deleted_patient_is_404(client_module: httpx.Client) -> None:
    missing = client_module.get(f"/Patient/nobody-{uuid.uuid4().hex[:8]}/$summary")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    pid = f"gone-{uuid.uuid4().hex[:8]}"
    put_all(client_module, [{"resourceType": "Patient", "id": pid}])
    assert client_module.delete(f"/Patient/{pid}").status_code in (200, 204)
    assert client_module.get(f"/Patient/{pid}/$summary").status_code == 404
    assert client_module.get("/Patient/bad id!/$summary").status_code == 400


def test_the_ips_rules_catch_broken_documents(client_module: httpx.Client, ids: Ids) -> None:
    good = summary(client_module, ids("ada"))

    def broken(change: Any) -> list[str]:
        bundle = copy.deepcopy(good)
        change(bundle)
        return ips_problems(bundle)

    def drop_allergies(b: dict[str, Any]) -> None:
        comp = b["entry"][0]["resource"]
        comp["section"] = [
            s for s in comp["section"] if s["code"]["coding"][0]["code"] != ALLERGIES
        ]

    def empty_without_reason(b: dict[str, Any]) -> None:
        s = b["entry"][0]["resource"]["section"][0]
        s.pop("entry")

    def dangling(b: dict[str, Any]) -> None:
        b["entry"][2]["resource"]["subject"] = {"reference": "Patient/someone-else"}

    def duplicate(b: dict[str, Any]) -> None:
        b["entry"][3]["fullUrl"] = b["entry"][2]["fullUrl"]

    def no_narrative(b: dict[str, Any]) -> None:
        b["entry"][0]["resource"]["section"][1].pop("text")

    def composition_second(b: dict[str, Any]) -> None:
        b["entry"][0], b["entry"][1] = b["entry"][1], b["entry"][0]

    assert any("Allergies" in p for p in broken(drop_allergies))
    assert any("emptyReason" in p for p in broken(empty_without_reason))
    assert any("does not resolve" in p for p in broken(dangling))
    assert any("not unique" in p for p in broken(duplicate))
    assert any("narrative" in p for p in broken(no_narrative))
    assert any("Composition" in p for p in broken(composition_second))


@pytest.mark.shared
@pytest.mark.parametrize(
    "name", ["IPS_IG-bundle-01.json", "IPS_IG_bundle-no-info-required-sections.json"]
)
def test_the_ig_examples_pass_the_ips_rules(name: str) -> None:
    from support import SHARED

    path = SHARED / "data/ips" / name
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    assert ips_problems(orjson.loads(path.read_bytes())) == []


def _load(database_url: str, files: list[Path]) -> None:
    async def run() -> None:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            report = await Loader(repository).load(files)
            assert not report.errors
        finally:
            await repository.close()

    asyncio.run(run())


def _patients_of(path: Path) -> list[str]:
    with gzip.open(path, "rb") as f:
        return [r["id"] for r in map(orjson.loads, f) if r["resourceType"] == "Patient"]


def test_summaries_of_the_bundled_synthea_sample_pass_the_ips_rules(
    client_module: httpx.Client, database_url: str
) -> None:
    _load(database_url, [SAMPLE])
    patients = _patients_of(SAMPLE)
    assert len(patients) >= 3
    for pid in patients:
        bundle = summary(client_module, pid)
        assert ips_problems(bundle) == [], pid
        assert validate_resource(bundle) == [], pid
        assert len(bundle["entry"]) > 3, pid  # Synthea patients have something to summarise


@pytest.mark.shared
def test_summaries_of_synthea_patients_pass_the_ips_rules(
    client_module: httpx.Client, database_url: str
) -> None:
    from support import SYNTHEA

    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data/synthea is not present")
    files = sorted(SYNTHEA.glob("*_*.json"), key=lambda p: p.stat().st_size)
    chosen = [files[0], files[len(files) // 2], files[-1]]  # smallest, middle, largest
    _load(database_url, chosen)
    for path in chosen:
        bundle = orjson.loads(path.read_bytes())
        (patient,) = [
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
        ]
        synthea_id = patient["identifier"][0]["value"]
        found = client_module.get(
            "/Patient",
            params={"identifier": f"https://github.com/synthetichealth/synthea|{synthea_id}"},
        ).json()
        (pid,) = [e["resource"]["id"] for e in found["entry"]]
        bundle = summary(client_module, pid)
        assert ips_problems(bundle) == [], path.name
        assert validate_resource(bundle) == [], path.name


# --- under SMART tokens ------------------------------------------------------------------
class Tokens:
    """Access tokens minted by the node's own authorization server, as its token endpoint would."""

    def __init__(self, database_url: str, issuer: str) -> None:
        self.database_url, self.issuer = database_url, issuer
        self.client_id = f"ips-tests-{uuid.uuid4().hex[:8]}"
        self._run(
            lambda auth: auth.clients.add(
                Client(
                    client_id=self.client_id,
                    name="IPS tests",
                    scope="*",
                    redirect_uris=("http://127.0.0.1/cb",),
                )
            )
        )

    def _run(self, body: Any) -> Any:
        async def go() -> Any:
            pool: Any = AsyncConnectionPool(
                self.database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
            )
            await pool.open()
            auth = AuthServer(pool)
            try:
                await auth.start()
                return await body(auth)
            finally:
                await auth.close()
                await pool.close()

        return asyncio.run(go())

    def client(self, scope: str, patient: str | None = None) -> httpx.Client:
        async def mint(auth: AuthServer) -> str:
            grant = await auth.grants.create(
                client_id=self.client_id,
                kind="cli",
                subject=f"ips-{patient}",
                scope=scope,
                lifetime=timedelta(hours=1),
                patient=patient,
                fhir_user=None,
            )
            issued = await auth.issuer.issue_access_token(grant, issuer=self.issuer, lifetime=600)
            return issued.access_token

        token = self._run(mint)
        return httpx.Client(
            base_url=self.issuer,
            timeout=60,
            headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {token}"},
        )


@pytest.fixture(scope="module")
def secured(database_url: str, ids: Ids) -> Iterator[Tokens]:
    with ServerThread(Settings(database_url=database_url, open=False)) as running:
        yield Tokens(database_url, running.base)


def test_a_patient_token_gets_its_own_summary_and_404_for_another(
    secured: Tokens, ids: Ids
) -> None:
    with secured.client("patient/*.rs", patient=ids("ada")) as ada:
        own = ada.get(f"/Patient/{ids('ada')}/$summary")
        other = ada.get(f"/Patient/{ids('bob')}/$summary")
    assert own.status_code == 200 and ips_problems(own.json()) == []
    assert entry_keys(own.json(), PROBLEMS) == {f"Condition/{ids('asthma')}"}
    assert other.status_code == 404
    assert other.json()["resourceType"] == "OperationOutcome"
    assert ids("gout") not in other.text


def test_a_summary_holds_only_what_the_tokens_scopes_allow(secured: Tokens, ids: Ids) -> None:
    scope = "patient/Patient.rs patient/Condition.rs"
    with secured.client(scope, patient=ids("ada")) as ada:
        response = ada.get(f"/Patient/{ids('ada')}/$summary")
        bob = ada.get(f"/Patient/{ids('bob')}/$summary")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert ips_problems(bundle) == []
    assert entry_keys(bundle, PROBLEMS) == {f"Condition/{ids('asthma')}"}
    allergies = section(bundle, ALLERGIES)
    assert allergies is not None and "emptyReason" in allergies
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert kinds == {"Composition", "Patient", "Condition", "Device"}
    assert bob.status_code == 404


def test_a_token_that_cannot_read_patients_is_refused(secured: Tokens, ids: Ids) -> None:
    with secured.client("patient/Condition.rs", patient=ids("ada")) as ada:
        response = ada.get(f"/Patient/{ids('ada')}/$summary")
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


def test_the_capability_statement_names_both_operations(client_module: httpx.Client) -> None:
    statement = client_module.get("/metadata").json()
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    operations = {o["name"]: o["definition"] for o in patient["operation"]}
    assert operations["summary"] == "http://hl7.org/fhir/uv/ips/OperationDefinition/summary"
    assert "shared-bundle" in operations


def test_a_patient_token_gets_its_own_shared_bundle_and_404_for_another(
    secured: Tokens, ids: Ids
) -> None:
    with secured.client("patient/*.rs", patient=ids("ada")) as ada:
        own = ada.get(f"/Patient/{ids('ada')}/$shared-bundle", params={"rendering": "false"})
        other = ada.get(f"/Patient/{ids('bob')}/$shared-bundle")
    assert own.status_code == 200, own.text
    kinds = {e["resource"]["resourceType"] for e in own.json()["entry"]}
    assert {"Patient", "Condition", "Coverage", "Organization"} <= kinds
    assert other.status_code == 404
    assert ids("gout") not in other.text


def test_a_report_result_about_another_patient_stays_out(client_module: httpx.Client) -> None:
    """Ada performed an Observation about Bob (so it is in her compartment) and her lab report
    lists it: her summary carries the report, not Bob's Observation."""
    made = Ids()
    ada, bob = made("ada"), made("bob")
    lab = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
    put_all(
        client_module,
        [
            {"resourceType": "Patient", "id": ada},
            {"resourceType": "Patient", "id": bob},
            {
                "resourceType": "Observation",
                "id": made("bobs"),
                "status": "final",
                "code": {"text": "glucose"},
                "subject": {"reference": f"Patient/{bob}"},
                "performer": [{"reference": f"Patient/{ada}"}],
                "valueString": "high",
            },
            {
                "resourceType": "DiagnosticReport",
                "id": made("report"),
                "status": "final",
                "category": [lab],
                "code": {"text": "glucose panel"},
                "subject": {"reference": f"Patient/{ada}"},
                "result": [{"reference": f"Observation/{made('bobs')}", "display": "glucose"}],
            },
        ],
    )
    bundle = summary(client_module, ada)
    assert ips_problems(bundle) == []
    held = carried(bundle)
    assert f"DiagnosticReport/{made('report')}" in held
    assert f"Observation/{made('bobs')}" not in held
    assert held[f"DiagnosticReport/{made('report')}"]["result"] == [{"display": "glucose"}]
