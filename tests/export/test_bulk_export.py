"""FHIR Bulk Data export over real HTTP with real tokens, on the bundled Synthea sample plus
Ada and Bob: Ada has a lab Observation, a Condition and an Observation labelled PSY; a Group
holds Ada (active) and Bob (inactive). Files are split at 200 resources or 3 patients to
exercise that."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from export_support import (
    ASYNC,
    download,
    export_all,
    ids,
    kickoff,
    manifest,
    own_database,
    search_ids,
    wait,
)
from typer.testing import CliRunner

from healthmesh.cli import app
from healthmesh.export.settings import ExportSettings
from healthmesh.fhir.consent import CLIENT_ID_SYSTEM
from healthmesh.load.loader import Loader, find_inputs
from healthmesh.store.repository import Repository
from secured import SecuredNode, secured_node

from support import FHIR_JSON, privacy_consent

RUN = uuid.uuid4().hex[:8]
SAMPLE = find_inputs([Path(__file__).parents[2] / "src/healthmesh/load/sample"])
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


def _id(name: str) -> str:
    return f"{name}-{RUN}"


def _obs(name: str, patient: str, category: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _id(name),
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{_id(patient)}"},
        **extra,
    }


RECORDS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": _id("ada"), "name": [{"family": "Ada"}]},
    {"resourceType": "Patient", "id": _id("bob"), "name": [{"family": "Bob"}]},
    _obs("ada-lab", "ada", "laboratory"),
    _obs("ada-psy", "ada", "survey", meta={"security": [PSY]}),
    _obs("bob-lab", "bob", "laboratory"),
    {
        "resourceType": "Condition",
        "id": _id("ada-cond"),
        "subject": {"reference": f"Patient/{_id('ada')}"},
        "code": {"text": "asthma"},
    },
    {
        "resourceType": "Group",
        "id": _id("cohort"),
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": f"Patient/{_id('ada')}"}},
            {"entity": {"reference": f"Patient/{_id('bob')}"}, "inactive": True},
        ],
    },
]
# The Group is stored in its first member's compartment (docs/storage.md): Ada's.
ADA = {_id(n) for n in ("ada", "ada-lab", "ada-psy", "ada-cond", "cohort")}
BOB = {_id(n) for n in ("bob", "bob-lab")}


@pytest.fixture(scope="module")
def database(admin_url: str) -> Iterator[str]:
    with own_database(admin_url, "hm_export") as url:
        yield url


@pytest.fixture(scope="module")
def node(database: str) -> Iterator[SecuredNode]:
    async def load() -> None:
        repository = Repository(database, min_size=1, max_size=3)
        await repository.open()
        try:
            await Loader(repository).load(SAMPLE)
        finally:
            await repository.close()

    asyncio.run(load())
    settings = ExportSettings(
        max_file_resources=200, max_file_patients=3, poll_interval=0.2, stale_after=2
    )
    with secured_node(database, export=settings) as running:
        _relabelled(database)
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in RECORDS
            ],
        }
        with running.client("system/*.cruds", client_id=f"admin-{RUN}") as admin:
            response = admin.post("", json=bundle, headers=FHIR_JSON)
            assert response.status_code == 200, response.text
        yield running


def _relabelled(database: str) -> None:
    """Wait for the start-up re-labelling of the loaded sample (interactions/relabel.py): a
    file produced before it finishes is refused afterwards, as docs/export.md says."""
    deadline = time.monotonic() + 60
    with psycopg.connect(database, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM label_rules_state").fetchone() != (1,):
            assert time.monotonic() < deadline, "the start-up re-labelling did not finish"
            time.sleep(0.1)


def backend(node: SecuredNode, name: str = "backend", **context: Any) -> httpx.Client:
    return node.client("system/*.rs", client_id=f"{name}-{RUN}", **context)


def clinic(node: SecuredNode) -> httpx.Client:
    return backend(node, "clinic", organization="org-clinic", purpose_of_use="TREAT")


def ada_app(node: SecuredNode, scope: str = "patient/*.rs") -> httpx.Client:
    return node.client(
        scope, client_id=f"ada-app-{RUN}", patient=_id("ada"), purpose_of_use="PATRQT"
    )


def deny_consent(node: SecuredNode, client_id: str) -> str:
    """Ada denies one app everything, with her own token; the Consent's id."""
    body = privacy_consent(
        f"Patient/{_id('ada')}",
        {
            "type": "deny",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id}},
                }
            ],
        },
    )
    with ada_app(node, "patient/*.cruds") as ada:
        response = ada.post("/Consent", json=body, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def revoke(node: SecuredNode, consent_id: str) -> None:
    with ada_app(node, "patient/*.cruds") as ada:
        assert ada.delete(f"/Consent/{consent_id}").status_code in (200, 204)


# --- what a system export holds ------------------------------------------------------------


def test_a_system_export_holds_exactly_what_search_returns_for_each_type(
    node: SecuredNode,
) -> None:
    with backend(node) as c:
        status = kickoff(c)
        body = manifest(c, status)
        assert body["requiresAccessToken"] is True
        assert body["request"].endswith("/$export")
        assert datetime.fromisoformat(body["transactionTime"]) <= datetime.now(UTC)
        exported = export_all(c, status)
        # The sample's 609 Observations (and ours) do not fit one 200-resource file, and a
        # file holds at most 3 patients' data.
        observations = [e for e in body["output"] if e["type"] == "Observation"]
        assert len(observations) >= 4
        for entry in observations:
            subjects = {r["subject"]["reference"] for r in download(c, entry["url"])}
            assert 1 <= len(subjects) <= 3
        types = set(exported) - {"AuditEvent"}  # the searches below add AuditEvents
        assert {"Patient", "Observation", "Organization", "Group", "Claim"} <= types
        for res_type in sorted(types):
            assert ids(exported[res_type]) == search_ids(c, res_type), res_type
            assert len(exported[res_type]) == len(ids(exported[res_type]))  # no duplicates
        # A wildcard is not an auditor's grant (docs/privacy.md): the audit trail, which names
        # withheld and sensitive resources too, is neither searched nor exported under it.
        assert ids(exported.get("AuditEvent", [])) == search_ids(c, "AuditEvent") == set()


def test_type_limits_the_export_to_the_named_types(node: SecuredNode) -> None:
    with backend(node) as c:
        exported = export_all(c, kickoff(c, params={"_type": "Patient,Condition"}))
        assert set(exported) == {"Patient", "Condition"}
        assert ids(exported["Patient"]) == search_ids(c, "Patient")


def test_since_exports_only_what_changed_after_it(node: SecuredNode) -> None:
    with backend(node) as c:
        first = manifest(c, kickoff(c, params={"_type": "Observation"}))
        since = first["transactionTime"]
        with node.client("system/*.cruds", client_id=f"admin-{RUN}") as admin:
            changed = _obs("ada-lab", "ada", "laboratory", valueString="changed")
            response = admin.put(f"/Observation/{_id('ada-lab')}", json=changed, headers=FHIR_JSON)
            assert response.status_code == 200, response.text
        exported = export_all(c, kickoff(c, params={"_type": "Observation", "_since": since}))
        assert ids(exported["Observation"]) == {_id("ada-lab")}


def test_type_filter_keeps_only_matching_resources_of_its_type(node: SecuredNode) -> None:
    with backend(node) as c:
        params = [
            ("_type", "Observation,Patient"),
            ("_typeFilter", f"Observation?category={CATEGORY}|laboratory"),
        ]
        exported = export_all(c, kickoff(c, params=params))
        assert ids(exported["Observation"]) == search_ids(
            c, "Observation", category=f"{CATEGORY}|laboratory"
        )
        assert {_id("ada-lab"), _id("bob-lab")} <= ids(exported["Observation"])
        assert ids(exported["Patient"]) == search_ids(c, "Patient")  # not filtered


def test_several_type_filters_of_a_type_add_up(node: SecuredNode) -> None:
    with backend(node) as c:
        params = [
            ("_type", "Observation"),
            ("_typeFilter", f"Observation?_id={_id('ada-lab')}"),
            ("_typeFilter", f"Observation?_id={_id('bob-lab')}"),
        ]
        exported = export_all(c, kickoff(c, params=params))
        assert ids(exported["Observation"]) == {_id("ada-lab"), _id("bob-lab")}


def test_a_post_kickoff_takes_its_parameters_from_a_parameters_resource(
    node: SecuredNode,
) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Observation,Patient"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "patient", "valueReference": {"reference": f"Patient/{_id('bob')}"}},
        ],
    }
    with backend(node) as c:
        exported = export_all(c, kickoff(c, "/Patient/$export", body=body))
        assert ids(exported["Observation"]) | ids(exported["Patient"]) == BOB


def test_a_group_export_holds_only_its_active_members_records(node: SecuredNode) -> None:
    with backend(node) as c:
        exported = export_all(c, kickoff(c, f"/Group/{_id('cohort')}/$export"))
        # The audit trail of Ada's record is in her compartment too (R4 AuditEvent.patient).
        trail = exported.pop("AuditEvent", [])
        everything = {r["id"] for rs in exported.values() for r in rs}
        assert everything == ADA - {_id("ada-psy")}  # PSY: not for a backend without consent
        assert all(f"Patient/{_id('ada')}" in str(event["entity"]) for event in trail)
        assert all(r["resourceType"] != "Organization" for rs in exported.values() for r in rs)


def test_an_unknown_group_is_404_at_kickoff(node: SecuredNode) -> None:
    with backend(node) as c:
        response = c.get(f"/Group/nope-{RUN}/$export", headers=ASYNC)
        assert response.status_code == 404
        assert response.json()["resourceType"] == "OperationOutcome"


def test_a_patient_token_exports_only_its_own_compartment_sensitive_data_included(
    node: SecuredNode,
) -> None:
    with ada_app(node) as ada:
        exported = export_all(ada, kickoff(ada, "/Patient/$export"))
        exported.pop("AuditEvent", None)  # who looked at her record: hers to read
        everything = {r["id"] for rs in exported.values() for r in rs}
        assert everything == ADA  # her PSY row too: patients see their own data


# --- consent and labels ----------------------------------------------------------------------


def test_a_sensitive_resource_is_never_exported_nor_counted_without_a_permit(
    node: SecuredNode,
) -> None:
    with clinic(node) as c:
        status = kickoff(c, params={"_type": "Observation"})
        body = manifest(c, status)
        exported = export_all(c, status)
        assert _id("ada-psy") not in ids(exported["Observation"])
        assert sum(e["count"] for e in body["output"]) == len(exported["Observation"])
        assert _id("ada-lab") in ids(exported["Observation"])


def test_a_consent_denying_the_client_removes_the_patient_from_its_exports(
    node: SecuredNode,
) -> None:
    consent = deny_consent(node, f"clinic-{RUN}")
    try:
        with clinic(node) as c:
            exported = export_all(c, kickoff(c, params={"_type": "Patient,Observation,Condition"}))
            everything = {r["id"] for rs in exported.values() for r in rs}
            assert everything & ADA == set()
            assert everything >= BOB
    finally:
        revoke(node, consent)


def test_a_file_produced_before_the_patients_consent_changed_is_not_served(
    node: SecuredNode,
) -> None:
    with clinic(node) as c:
        body = manifest(c, kickoff(c, params={"_type": "Patient,Organization"}))
        patients = {
            e["url"]: ids(download(c, e["url"])) for e in body["output"] if e["type"] == "Patient"
        }
        hers = next(url for url, held in patients.items() if _id("ada") in held)
        others = next(url for url, held in patients.items() if _id("ada") not in held)
        organizations = next(e["url"] for e in body["output"] if e["type"] == "Organization")
        consent = deny_consent(node, f"clinic-{RUN}")
        try:
            response = c.get(hers)
            assert response.status_code == 410
            assert response.json()["resourceType"] == "OperationOutcome"
            # Files of other patients, and reference data, are still served.
            assert download(c, others)
            assert download(c, organizations)
        finally:
            revoke(node, consent)
        assert c.get(hers).status_code == 410  # changed again, still refused


# --- jobs: isolation, cancel, restarts, expiry ------------------------------------------------


def test_another_client_cannot_see_poll_download_or_cancel_a_job(node: SecuredNode) -> None:
    with backend(node, "owner") as owner, backend(node, "stranger") as stranger:
        status = kickoff(owner, params={"_type": "Patient"})
        url = manifest(owner, status)["output"][0]["url"]
        unknown = status[: -len("0" * 32)] + "0" * 32
        for response in (
            stranger.get(status),
            stranger.get(url),
            stranger.delete(status),
            stranger.get(unknown),
        ):
            assert response.status_code == 404
            assert response.json()["resourceType"] == "OperationOutcome"
        # The same app acting for another patient is someone else too.
        with node.client("patient/*.rs", client_id=f"owner-{RUN}", patient=_id("bob")) as other:
            assert other.get(status).status_code == 404
        assert owner.get(status).status_code == 200


def test_a_status_or_file_request_needs_a_token(node: SecuredNode) -> None:
    with backend(node) as c:
        status = kickoff(c, params={"_type": "Patient"})
        wait(c, status)
    assert httpx.get(status).status_code == 401


def test_cancel_removes_the_job_and_its_files(node: SecuredNode, database: str) -> None:
    with backend(node) as c:
        status = kickoff(c)
        job = status.rsplit("/", 1)[1]
        response = c.delete(status)
        assert response.status_code == 202
        assert c.get(status).status_code == 404
        assert c.delete(status).status_code == 404
    with psycopg.connect(database) as conn:
        files = conn.execute("SELECT count(*) FROM export_file WHERE job_id = %s", (job,))
        assert files.fetchone() == (0,)
        chunks = conn.execute("SELECT count(*) FROM export_chunk WHERE job_id = %s", (job,))
        assert chunks.fetchone() == (0,)


def test_a_job_interrupted_by_a_restart_is_run_again(node: SecuredNode, database: str) -> None:
    with backend(node) as c:
        status = kickoff(c, params={"_type": "Patient"})
        first = manifest(c, status)
        job = status.rsplit("/", 1)[1]
        with psycopg.connect(database, autocommit=True) as conn:
            # As a process that died mid-run leaves it: running, heartbeat stale.
            conn.execute(
                "UPDATE export_job SET status = 'running', worker = 'gone',"
                " heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                (job,),
            )
        again = manifest(c, status)
        assert again["transactionTime"] > first["transactionTime"]
        assert sum(e["count"] for e in again["output"]) == len(search_ids(c, "Patient"))


def test_a_finished_job_expires_and_is_then_unknown(node: SecuredNode, database: str) -> None:
    with backend(node) as c:
        status = kickoff(c, params={"_type": "Patient"})
        url = manifest(c, status)["output"][0]["url"]
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "UPDATE export_job SET expires_at = now() - interval '1 second' WHERE id = %s",
                (status.rsplit("/", 1)[1],),
            )
        assert c.get(status).status_code == 404
        assert c.get(url).status_code == 404


def test_a_client_may_not_run_unbounded_exports_at_once(node: SecuredNode, database: str) -> None:
    with backend(node, "greedy") as c:
        with psycopg.connect(database, autocommit=True) as conn:
            for i in range(ExportSettings().max_active_jobs):
                conn.execute(
                    # Running elsewhere, heartbeat fresh: no worker here takes them.
                    "INSERT INTO export_job (id, owner, request, params, status, heartbeat_at)"
                    " VALUES (%s, %s, 'x', '{}', 'running', now() + interval '1 hour')",
                    (f"{RUN}{i:024d}", f"client:greedy-{RUN}"),
                )
        try:
            response = c.get("/$export", headers=ASYNC)
            assert response.status_code == 429
            assert response.json()["resourceType"] == "OperationOutcome"
        finally:
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("DELETE FROM export_job WHERE owner = %s", (f"client:greedy-{RUN}",))


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "params", "where"),
    [
        ({"Prefer": ""}, {}, "Prefer"),
        ({}, {"_outputFormat": "application/fhir+xml"}, "_outputFormat"),
        ({}, {"_since": "yesterday"}, "_since"),
        ({}, {"_type": "Nonsense"}, "_type"),
        ({}, {"_typeFilter": "no-query"}, "_typeFilter"),
        ({}, {"_typeFilter": "Observation?nonsense=1"}, "_typeFilter"),
        ({}, {"_typeFilter": "Observation?code:in=http://example.org/unknown-vs"}, "code:in"),
        ({}, {"_elements": "id"}, "_elements"),
        ({}, {"includeAssociatedData": "LatestProvenanceResources"}, "includeAssociatedData"),
        ({}, {"patient": "Patient/x"}, "patient"),
        ({}, {"_until": "2020-01-01T00:00:00Z"}, "_until"),
    ],
)
def test_a_bad_or_unsupported_kickoff_is_400_naming_the_parameter(
    node: SecuredNode, headers: dict[str, str], params: dict[str, str], where: str
) -> None:
    with backend(node) as c:
        response = c.get("/$export", params=params, headers={**ASYNC, **headers})
        assert response.status_code == 400, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert where in outcome["issue"][0]["expression"]


def test_lenient_handling_ignores_unsupported_parameters_and_says_so(node: SecuredNode) -> None:
    with backend(node) as c:
        params = {"_type": "Patient", "_elements": "id", "includeAssociatedData": "x"}
        status = kickoff(c, params=params, headers={"Prefer": "respond-async, handling=lenient"})
        body = manifest(c, status)
        assert [e["type"] for e in body["error"]] == ["OperationOutcome"]
        notes = download(c, body["error"][0]["url"])
        text = " ".join(o["issue"][0]["diagnostics"] for o in notes)
        assert "_elements" in text and "includeAssociatedData" in text
        assert {e["type"] for e in body["output"]} == {"Patient"}


def test_a_token_may_not_export_a_type_its_scopes_do_not_cover(node: SecuredNode) -> None:
    with node.client("system/Patient.rs", client_id=f"narrow-{RUN}") as c:
        response = c.get("/$export", params={"_type": "Observation"}, headers=ASYNC)
        assert response.status_code == 403
        exported = export_all(c, kickoff(c))
        assert set(exported) == {"Patient"}
        lenient = {"Prefer": "respond-async, handling=lenient"}
        status = kickoff(c, params={"_type": "Observation,Patient"}, headers=lenient)
        body = manifest(c, status)
        assert {e["type"] for e in body["output"]} == {"Patient"}
        assert "Observation" in str(download(c, body["error"][0]["url"]))


# --- audit and capabilities --------------------------------------------------------------------


def test_kickoff_and_each_download_are_audited_naming_the_patients(
    node: SecuredNode, database: str
) -> None:
    client_id = f"audited-{RUN}"
    with node.client("system/*.rs", client_id=client_id) as c:
        status = kickoff(c, f"/Group/{_id('cohort')}/$export", params={"_type": "Condition"})
        body = manifest(c, status)
        download(c, body["output"][0]["url"])
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT patient_id, content::jsonb -> 'type' ->> 'code' FROM resource"
            " WHERE res_type = 'AuditEvent' AND content LIKE %s",
            (f"%{client_id}%",),
        ).fetchall()
    kinds = [code for _, code in rows]
    assert kinds.count("rest") == 1  # the kick-off
    exports = [patient for patient, code in rows if code == "110106"]
    assert sorted(exports, key=str) == sorted([_id("ada"), None], key=str)


def test_the_capability_statement_lists_the_export_operations(node: SecuredNode) -> None:
    with httpx.Client(base_url=node.base) as c:
        statement = c.get("/metadata").json()
    rest = statement["rest"][0]
    assert "export" in {o["name"] for o in rest["operation"]}
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    group = next(r for r in rest["resource"] if r["type"] == "Group")
    assert "export" in {o["name"] for o in patient["operation"]}
    assert "export" in {o["name"] for o in group["operation"]}


def test_the_export_command_downloads_every_file_of_an_export(
    node: SecuredNode, tmp_path: Path
) -> None:
    token = node.token("system/*.rs", client_id=f"cli-{RUN}")
    result = CliRunner().invoke(
        app,
        ["export", "--out", str(tmp_path), "--url", node.base, "--type", "Patient,Condition"],
        env={"HEALTHMESH_TOKEN": token},
    )
    assert result.exit_code == 0, result.output
    written = {p.name.split(".")[0] for p in tmp_path.iterdir()}
    assert written == {"Patient", "Condition"}
    with node.client("system/*.rs", client_id=f"cli-{RUN}") as c:
        exported = {
            orjson.loads(line)["id"]
            for p in tmp_path.glob("Patient.*.ndjson")
            for line in p.read_bytes().splitlines()
        }
        assert exported == search_ids(c, "Patient")
