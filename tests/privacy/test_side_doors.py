"""No withheld resource is reachable through a side door (issue #5, "Proof").

Hope opted out of the network; Val said nothing, but one of her Observations is labelled PSY
(behavioural health) and so withheld by the sensitive-data default. A clinic backend with
``system/*.cruds`` (purpose TREAT) then tries every way in: a query for each search
parameter the withheld resources have a value for (generated from their index rows, and
first confirmed to match them on the --open server), chains and ``_has`` through them,
``_include``/``_revinclude`` (also ``:iterate``), compartment searches, history at every
level, vread, ``$everything``, ``$summary``, ``$shared-bundle``, ``_summary=count``,
``_total``, paging, ``_elements``, batch GETs, the audit trail, and conditional create,
update, patch and delete. Each probe has a visible twin that the same route must find, so
a probe that finds nothing for any reason cannot pass by accident.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from policy_matrix_data import ACT_CODE, OBSERVATION_CATEGORY, consent, rid, transaction

from healthmesh.fhir.search.extract import extract
from secured import SecuredNode, secured_node

from conftest import ServerThread
from support import FHIR_JSON

HOPE, VAL = rid("hope"), rid("val")
WITHHELD = [
    f"Patient/{HOPE}",
    f"Observation/{HOPE}-obs",
    f"Condition/{HOPE}-cond",
    f"Encounter/{HOPE}-enc",
    f"DiagnosticReport/{HOPE}-dr",
    f"Observation/{VAL}-psy",
]
TWIN = {  # a withheld resource -> its visible twin
    f"Patient/{HOPE}": f"Patient/{VAL}",
    f"Observation/{HOPE}-obs": f"Observation/{VAL}-obs",
    f"Condition/{HOPE}-cond": f"Condition/{VAL}-cond",
    f"Encounter/{HOPE}-enc": f"Encounter/{VAL}-enc",
    f"DiagnosticReport/{HOPE}-dr": f"DiagnosticReport/{VAL}-dr",
    f"Observation/{VAL}-psy": f"Observation/{VAL}-obs",
}


def _record(p: str, *, psy: bool) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{p}"}

    def obs(name: str, code: str, **extra: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"{p}-{name}",
            "identifier": [{"system": "urn:test:side-doors", "value": f"{p}-{name}"}],
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": name},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{p}-enc"},
            "effectiveDateTime": "2024-03-04T05:06:07Z",
            "issued": "2024-03-04T06:00:00Z",
            "performer": [{"reference": f"Practitioner/{rid('dr-side')}"}],
            "valueQuantity": {
                "value": 7.25,
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            },
            "note": [{"text": f"note for {name}"}],
            **extra,
        }

    results = [{"reference": f"Observation/{p}-obs"}]
    record: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": p,
            "identifier": [{"system": "urn:test:mrn", "value": f"mrn-{p}"}],
            "name": [{"family": f"Family{p}", "given": ["Given"]}],
            "telecom": [{"system": "email", "value": f"{p}@example.org"}],
            "gender": "female",
            "birthDate": "1980-02-03",
            "address": [{"city": f"City{p}", "postalCode": "12345"}],
            "generalPractitioner": [{"reference": f"Practitioner/{rid('dr-side')}"}],
        },
        {
            "resourceType": "Encounter",
            "id": f"{p}-enc",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": subject,
            "period": {"start": "2024-03-04T05:00:00Z", "end": "2024-03-04T07:00:00Z"},
        },
        obs("obs", "2345-7"),
        {
            "resourceType": "Condition",
            "id": f"{p}-cond",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "195967001"}]},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{p}-enc"},
            "onsetDateTime": "2019-05-06",
        },
    ]
    if psy:
        psy_label = {"security": [{"system": ACT_CODE, "code": "PSY"}]}
        record.append(obs("psy", "44261-6", meta=psy_label))
        results.append({"reference": f"Observation/{p}-psy"})
    record.append(
        {
            "resourceType": "DiagnosticReport",
            "id": f"{p}-dr",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{p}-enc"},
            "result": results,
        }
    )
    return record


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    records = [
        *_record(HOPE, psy=False),
        *_record(VAL, psy=True),
        {"resourceType": "Practitioner", "id": rid("dr-side"), "name": [{"family": "Side"}]},
    ]
    bundle = transaction(records)
    with secured_node(database_url) as running:
        with running.client("system/*.cruds", client_id=rid("side-loader")) as admin:
            assert admin.post("", json=bundle, headers=FHIR_JSON).status_code == 200
        with running.client("patient/Consent.c", client_id=rid("hope-app"), patient=HOPE) as hope:
            opted_out = hope.post(
                "/Consent", json=consent(HOPE, {"type": "deny"}), headers=FHIR_JSON
            )
            assert opted_out.status_code == 201, opted_out.text
        yield running


@pytest.fixture(scope="module")
def clinic(node: SecuredNode) -> Iterator[httpx.Client]:
    with node.client(
        "system/*.cruds",
        client_id=rid("side-clinic"),
        organization="org-side-clinic",
        purpose_of_use="TREAT",
    ) as c:
        yield c


@pytest.fixture(scope="module")
def open_fhir(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base, timeout=30, headers={"Accept": "application/fhir+json"}
    ) as c:
        yield c


def keys(body: dict[str, Any]) -> set[str]:
    """Every resource a Bundle carries (entries, and entries' nested Bundles)."""
    found = set()
    for entry in body.get("entry", []):
        resource = entry.get("resource") or {}
        if "id" in resource:
            found.add(f"{resource['resourceType']}/{resource['id']}")
        if resource.get("resourceType") == "Bundle":
            found |= keys(resource)
        response = entry.get("response") or {}
        if response.get("location"):
            found.add("/".join(response["location"].split("/")[:2]))
    return found


def withheld_in(body: dict[str, Any]) -> set[str]:
    return keys(body) & set(WITHHELD)


def _without_ids(text: str, id: str, placeholder: str) -> str:
    """A response with the ids it names and its timestamps made comparable."""
    text = re.sub(r'"lastUpdated": ?"[^"]*"', "", text.replace(id, placeholder))
    return re.sub(r'"id": ?"[0-9a-f-]{36}"', "", text)


def get(client: httpx.Client, path: str, params: Any = None) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, f"{path} {params}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


# --- the baseline: plain reads are refused ---------------------------------------------------


def test_withheld_resources_read_as_unknown_and_their_twins_are_read(
    clinic: httpx.Client,
) -> None:
    for key in WITHHELD:
        refused = clinic.get(f"/{key}")
        unknown = clinic.get(f"/{key.split('/')[0]}/no-such-{rid('id')}")
        assert refused.status_code == unknown.status_code == 404, key
        assert refused.json()["issue"][0]["code"] == unknown.json()["issue"][0]["code"]
        assert clinic.get(f"/{TWIN[key]}").status_code == 200, TWIN[key]


# --- every search parameter --------------------------------------------------------------


def _queries(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(parameter, value) pairs, from the resource's own index rows, that should match it."""
    rows = extract(resource)
    for param, system, code, _ in rows.token:
        if code and param != "_security":
            yield param, f"{system}|{code}" if system else code
    for param, _, exact in rows.string:
        yield f"{param}:exact", exact
    for param, low, high in rows.date:
        if low.year > 1 and high.year < 9999:
            yield param, f"ge{low.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    for param, number in rows.number:
        yield param, str(number)
    for param, value, system, unit, *_ in rows.quantity:
        yield param, f"{value}|{system or ''}|{unit or ''}"
    for param, uri in rows.uri:
        yield param, uri
    for param, target, id, _ in rows.reference:
        if target and id:
            yield param, f"{target}/{id}"


def test_no_search_parameter_finds_a_withheld_resource(
    clinic: httpx.Client, open_fhir: httpx.Client
) -> None:
    tried, leaks = 0, []
    for key in WITHHELD:
        res_type = key.split("/")[0]
        stored = get(open_fhir, f"/{key}")
        for param, value in _queries(stored):
            params = {param: value, "_count": "100"}
            if key not in keys(get(open_fhir, f"/{res_type}", params)):
                continue  # not a query that matches it (e.g. a value normalised away)
            tried += 1
            if key in keys(get(clinic, f"/{res_type}", params)):
                leaks.append(f"{res_type}?{param}={value}")
            counted = get(clinic, f"/{res_type}", {**params, "_summary": "count"})["total"]
            shown = get(clinic, f"/{res_type}", {**params, "_total": "accurate"})
            alone = get(clinic, f"/{res_type}", {**params, "_count": "0"})["total"]
            if counted != len(shown.get("entry", [])) or not counted == shown["total"] == alone:
                leaks.append(
                    f"{res_type}?{param}={value}: counts {counted}/{shown['total']}/{alone}"
                )
    assert tried >= 40, f"only {tried} generated queries matched the withheld resources"
    assert not leaks, leaks


def test_the_twins_are_found_by_the_same_kind_of_query(
    clinic: httpx.Client, open_fhir: httpx.Client
) -> None:
    # The generated queries work for the clinic where nothing is withheld.
    for twin in sorted(set(TWIN.values())):
        res_type, _ = twin.split("/")
        stored = get(open_fhir, f"/{twin}")
        found = 0
        for param, value in _queries(stored):
            params = {param: value, "_count": "100"}
            if twin in keys(get(open_fhir, f"/{res_type}", params)):
                assert twin in keys(get(clinic, f"/{res_type}", params)), f"{param}={value}"
                found += 1
        assert found >= 3, twin


# --- through other resources ---------------------------------------------------------------


def test_chains_do_not_match_through_a_withheld_resource(clinic: httpx.Client) -> None:
    # Val's visible DiagnosticReport lists her withheld PSY Observation among its results.
    through_psy = get(clinic, "/DiagnosticReport", {"result.code": "44261-6", "subject": VAL})
    through_visible = get(clinic, "/DiagnosticReport", {"result.code": "2345-7", "subject": VAL})
    assert f"DiagnosticReport/{VAL}-dr" not in keys(through_psy)
    assert f"DiagnosticReport/{VAL}-dr" in keys(through_visible)
    # Reverse: Hope's Observations chained to her (withheld) Patient, by name.
    assert not withheld_in(get(clinic, "/Observation", {"subject:Patient.family": f"Family{HOPE}"}))
    assert keys(get(clinic, "/Observation", {"subject:Patient.family": f"Family{VAL}"}))


def test_has_does_not_reveal_a_withheld_resource(clinic: httpx.Client) -> None:
    psy = get(clinic, "/Patient", {"_has:Observation:subject:code": "44261-6", "_id": VAL})
    plain = get(clinic, "/Patient", {"_has:Observation:subject:code": "2345-7", "_id": VAL})
    assert keys(psy) == set() and keys(plain) == {f"Patient/{VAL}"}
    count = get(
        clinic,
        "/Patient",
        {"_has:Observation:subject:code": "44261-6", "_summary": "count", "_id": VAL},
    )
    assert count["total"] == 0


def test_includes_and_revincludes_leave_out_withheld_resources(clinic: httpx.Client) -> None:
    for params in (
        {"_id": f"{VAL}-dr,{HOPE}-dr", "_include": "DiagnosticReport:result"},
        {"_id": f"{VAL}-dr", "_include": "DiagnosticReport:*"},
        {"_id": f"{VAL}-enc,{HOPE}-enc", "_revinclude": "Observation:encounter"},
        {
            "_id": f"{VAL}-enc",
            "_revinclude:iterate": "DiagnosticReport:encounter",
            "_include:iterate": "DiagnosticReport:result",
        },
    ):
        res_type = "DiagnosticReport" if "dr" in params["_id"].split(",")[0] else "Encounter"
        body = get(clinic, f"/{res_type}", params)
        assert not withheld_in(body), params
        assert f"Observation/{VAL}-obs" in keys(body) or res_type == "Encounter", params
    patient = get(clinic, "/Patient", {"_id": f"{VAL},{HOPE}", "_revinclude": "*"})
    assert not withheld_in(patient)
    assert {f"Patient/{VAL}", f"Observation/{VAL}-obs"} <= keys(patient)


def test_compartment_searches_and_everything_leave_out_withheld_resources(
    clinic: httpx.Client,
) -> None:
    assert not withheld_in(get(clinic, f"/Patient/{VAL}/Observation"))
    assert keys(get(clinic, f"/Patient/{HOPE}/Observation")) == set()
    everything = get(clinic, f"/Patient/{VAL}/$everything", {"_count": "1000"})
    assert f"Observation/{VAL}-obs" in keys(everything) and not withheld_in(everything)
    # Hope's record answers as a patient nobody knows does, word for word.
    nobody = f"no-such-{rid('p')}"
    for route in ("/$everything", "/Observation", "/_history"):
        hope = clinic.get(f"/Patient/{HOPE}{route}")
        unknown = clinic.get(f"/Patient/{nobody}{route}")
        assert hope.status_code == unknown.status_code, (route, hope.text, unknown.text)
        assert _without_ids(hope.text, HOPE, nobody) == _without_ids(unknown.text, nobody, nobody)


def test_summary_and_shared_bundle_leave_out_withheld_resources(clinic: httpx.Client) -> None:
    for operation in ("$summary", "$shared-bundle"):
        val = clinic.get(f"/Patient/{VAL}/{operation}")
        assert val.status_code == 200, val.text
        assert f"Observation/{VAL}-psy" not in val.text and "44261-6" not in val.text
        hope = clinic.get(f"/Patient/{HOPE}/{operation}")
        nobody = f"no-such-{rid('p')}"
        unknown = clinic.get(f"/Patient/{nobody}/{operation}")
        assert hope.status_code == unknown.status_code == 404, (operation, hope.text)
        assert hope.text.replace(HOPE, nobody) == unknown.text  # the same answer, word for word


# --- history and versions ------------------------------------------------------------------


def test_history_and_vread_leave_out_withheld_resources(clinic: httpx.Client) -> None:
    for key in WITHHELD:
        res_type, id = key.split("/")
        instance = clinic.get(f"/{key}/_history")
        unknown = clinic.get(f"/{res_type}/no-such-{id}/_history")
        assert instance.status_code == unknown.status_code, (key, instance.text)
        assert not withheld_in(instance.json()), key
        assert clinic.get(f"/{key}/_history/1").status_code == 404, key
        assert clinic.get(f"/{TWIN[key]}/_history/1").status_code == 200, TWIN[key]
    for res_type in ("Observation", "Patient", "Encounter", "DiagnosticReport", "Condition"):
        body = get(clinic, f"/{res_type}/_history", {"_count": "1000"})
        assert not withheld_in(body), res_type
    system = get(clinic, "/_history", {"_count": "1000"})
    assert not withheld_in(system)
    assert f"Observation/{VAL}-obs" in keys(system)


# --- result parameters ---------------------------------------------------------------------


def test_counts_totals_paging_and_elements_leave_out_withheld_resources(
    clinic: httpx.Client,
) -> None:
    ids = ",".join(
        k.split("/")[1] for k in [*WITHHELD, *TWIN.values()] if k.startswith("Observation/")
    )
    visible = {f"Observation/{VAL}-obs"}
    assert get(clinic, "/Observation", {"_id": ids, "_summary": "count"})["total"] == 1
    for total in ("accurate", "estimate"):
        body = get(clinic, "/Observation", {"_id": f"{HOPE}-obs,{VAL}-psy", "_total": total})
        assert body.get("total", 0) == 0 and keys(body) == set(), total
    # Page one by one: as many pages as visible resources, no link to a withheld one.
    seen: set[str] = set()
    url: str | None = f"/Observation?_id={ids}&_count=1"
    pages = 0
    while url is not None:
        body = get(clinic, url)
        seen |= keys(body)
        pages += 1
        nexts = [link["url"] for link in body.get("link", []) if link["relation"] == "next"]
        parts = urlsplit(nexts[0]) if nexts else None
        url = f"{parts.path.removeprefix('/fhir')}?{parts.query}" if parts else None
        assert pages <= 5
    assert seen == visible and pages == 1
    for summary in ("true", "text", "data"):
        assert keys(get(clinic, "/Observation", {"_id": ids, "_summary": summary})) == visible
    assert keys(get(clinic, "/Observation", {"_id": ids, "_elements": "id"})) == visible
    security = get(clinic, "/Observation", {"_security": "PSY", "_id": ids})
    assert keys(security) == set()
    negated = get(clinic, "/Observation", {"subject": VAL, "code:not": "2345-7"})
    assert not withheld_in(negated)


def test_batch_and_transaction_reads_answer_404_for_withheld_resources(
    clinic: httpx.Client,
) -> None:
    for kind in ("batch", "transaction"):
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"request": {"method": "GET", "url": key}} for key in WITHHELD]
            + [{"request": {"method": "GET", "url": f"Observation?_id={HOPE}-obs,{VAL}-psy"}}],
        }
        response = clinic.post("", json=bundle, headers=FHIR_JSON)
        if kind == "transaction" and response.status_code != 200:
            # A transaction fails as a whole at its first unknown entry: as for an unknown id.
            unknown = {**bundle, "entry": [{"request": {"method": "GET", "url": "Patient/none"}}]}
            refused = clinic.post("", json=unknown, headers=FHIR_JSON)
            assert response.status_code == refused.status_code == 404, response.text
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert not withheld_in(body), kind
        statuses = [e["response"]["status"] for e in body["entry"]]
        assert all(s.startswith("404") for s in statuses[:-1]), statuses


def test_the_audit_trail_does_not_reveal_withheld_resources_to_a_recipient(
    clinic: httpx.Client,
) -> None:
    # system/*.rs covers AuditEvent, but an opted-out patient's trail (which names each of
    # her resources) is hers and her auditors', not every backend's.
    events = get(clinic, "/AuditEvent", {"patient": HOPE, "_count": "1000"})
    assert "entry" not in events or all(HOPE not in str(e) for e in events["entry"])
    everything = get(clinic, "/AuditEvent", {"_count": "1000", "entity": f"Observation/{VAL}-psy"})
    assert keys(everything) == set()


# --- conditional writes --------------------------------------------------------------------


def _obs_body(p: str, name: str) -> dict[str, Any]:
    body = next(r for r in _record(p, psy=True) if r["id"] == f"{p}-{name}")
    return {k: v for k, v in body.items() if k not in ("id", "meta")}


def test_conditional_writes_do_not_reveal_or_touch_withheld_resources(
    clinic: httpx.Client, open_fhir: httpx.Client
) -> None:
    before = {key: get(open_fhir, f"/{key}")["meta"]["versionId"] for key in WITHHELD}
    for target, p, name in ((f"{HOPE}-obs", HOPE, "obs"), (f"{VAL}-psy", VAL, "psy")):
        criteria = f"identifier=urn:test:side-doors|{target}"
        created = clinic.post(
            "/Observation",
            json=_obs_body(p, name),
            headers={**FHIR_JSON, "If-None-Exist": criteria},
        )
        # As if nothing matched: a new resource, not "200, it exists".
        assert created.status_code == 201, created.text
        assert created.json()["id"] != target
        updated = clinic.put(f"/Observation?{criteria}", json=_obs_body(p, name), headers=FHIR_JSON)
        # It matches the copy just created (if the clinic may see it), never the original.
        assert updated.status_code in (200, 201), updated.text
        assert updated.json()["id"] != target
        patched = clinic.patch(
            f"/Observation?{criteria}&subject=Patient/{p}&_id={target}",
            json=[{"op": "replace", "path": "/status", "value": "amended"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        nothing = clinic.patch(
            f"/Observation?identifier=urn:test:side-doors|none&subject=Patient/{p}&_id=none",
            json=[{"op": "replace", "path": "/status", "value": "amended"}],
            headers={"Content-Type": "application/json-patch+json"},
        )
        # As for criteria nothing matches.
        assert patched.status_code == nothing.status_code == 412, patched.text
        assert (
            patched.json()["issue"][0]["diagnostics"] == nothing.json()["issue"][0]["diagnostics"]
        )
        deleted = clinic.delete(f"/Observation?_id={target}")
        assert deleted.status_code in (200, 204), deleted.text
    after = {key: get(open_fhir, f"/{key}")["meta"]["versionId"] for key in WITHHELD}
    assert after == before  # nothing withheld was changed or deleted
    # The twin is matched (so the criteria would have worked).
    twin = clinic.post(
        "/Observation",
        json=_obs_body(VAL, "obs"),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:test:side-doors|{VAL}-obs"},
    )
    assert twin.status_code == 200 and twin.json()["id"] == f"{VAL}-obs", twin.text


def test_a_patch_by_id_neither_shows_nor_changes_a_withheld_resource(
    clinic: httpx.Client, open_fhir: httpx.Client
) -> None:
    # A JSON Patch answers with the patched resource, and its "test" operation answers
    # yes or no about the content: on a withheld resource both are disclosure.
    for key in (f"Observation/{VAL}-psy", f"Observation/{HOPE}-obs"):
        before = get(open_fhir, f"/{key}")["meta"]["versionId"]
        probe = [{"op": "test", "path": "/status", "value": "final"}]
        patch = {"Content-Type": "application/json-patch+json"}
        patched = clinic.patch(f"/{key}", json=probe, headers=patch)
        unknown = clinic.patch(f"/Observation/no-such-{rid('o')}", json=probe, headers=patch)
        assert patched.status_code == unknown.status_code == 404, patched.text
        assert "44261-6" not in patched.text and "7.25" not in patched.text
        assert get(open_fhir, f"/{key}")["meta"]["versionId"] == before
    twin = clinic.patch(
        f"/Observation/{VAL}-obs",
        json=[{"op": "test", "path": "/status", "value": "final"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert twin.status_code == 200, twin.text
