"""Scopes enforced inside the queries, through real HTTP with real tokens.

Two patients, Ada and Bob, each with lab and vital-sign Observations and a Condition; an
Organization no patient owns. Tokens are minted by the node's own authorization server
(grant + signed JWT, exactly what the token endpoint hands out) and presented as bearer
tokens to a server running without --open.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from secured import SecuredNode, secured_node

from support import FHIR_JSON, without_id

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RUN = uuid.uuid4().hex[:8]  # ids unique to this module's run: the database is shared


def _id(name: str) -> str:
    return f"{name}-{RUN}"


def _observation(oid: str, patient: str, category: str, code: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "identifier": [{"system": "urn:enforcement", "value": oid}],
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-01-02T10:00:00Z",
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }


def _records() -> list[dict[str, Any]]:
    ada, bob = _id("ada"), _id("bob")
    return [
        {"resourceType": "Organization", "id": _id("org"), "name": f"Clinic {RUN}"},
        {
            "resourceType": "Patient",
            "id": ada,
            "name": [{"family": f"Lovelace{RUN}", "given": ["Ada"]}],
            "managingOrganization": {"reference": f"Organization/{_id('org')}"},
        },
        {"resourceType": "Patient", "id": bob, "name": [{"family": f"Builder{RUN}"}]},
        _observation(_id("ada-lab"), ada, "laboratory", "2345-7", 95),
        _observation(_id("ada-vital"), ada, "vital-signs", "8867-4", 70),
        _observation(_id("bob-lab"), bob, "laboratory", "2345-7", 180),
        _observation(_id("bob-vital"), bob, "vital-signs", "8867-4", 88),
        {
            "resourceType": "Condition",
            "id": _id("ada-cond"),
            "subject": {"reference": f"Patient/{ada}"},
            "code": {"text": "asthma"},
        },
        {
            "resourceType": "Condition",
            "id": _id("bob-cond"),
            "subject": {"reference": f"Patient/{bob}"},
            "code": {"text": "gout"},
        },
    ]


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        with running.client("system/*.cruds") as admin:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": r,
                        "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                    }
                    for r in _records()
                ],
            }
            response = admin.post("", json=bundle, headers=FHIR_JSON)
            assert response.status_code == 200, response.text
        yield running


def ids(response: httpx.Response, mode: str = "match") -> set[str]:
    assert response.status_code == 200, response.text
    return {
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    }


def mine(*names: str) -> set[str]:
    return {_id(n) for n in names}


# --- the door ------------------------------------------------------------------------------


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(node: SecuredNode) -> None:
    with node.client() as anonymous:
        response = anonymous.get(f"/Patient/{_id('ada')}")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer", "Bearer eyJhbGciOiJub25lIn0.e30."],
)
def test_a_malformed_or_foreign_credential_is_401_invalid_token(
    node: SecuredNode, header: str
) -> None:
    with httpx.Client(base_url=node.base, timeout=30) as c:
        response = c.get("/Observation", headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    credential = header.partition(" ")[2]
    assert not credential or credential not in response.text  # never echoed


def test_the_capability_statement_needs_no_token(node: SecuredNode) -> None:
    with node.client() as anonymous:
        response = anonymous.get("/metadata")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_a_revoked_grant_is_refused_on_its_next_use(node: SecuredNode) -> None:
    token = node.token("patient/*.rs", patient=_id("ada"))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=node.base, timeout=30, headers=headers) as c:
        assert c.get(f"/Patient/{_id('ada')}").status_code == 200
        claims = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        with psycopg.connect(node.database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE auth_grant SET revoked_at = now() WHERE grant_id = %s",
                (claims["grant_id"],),
            )
        assert c.get(f"/Patient/{_id('ada')}").status_code == 401


# --- patient context: the compartment, nothing else ------------------------------------------


def test_a_patient_token_searches_only_its_own_compartment(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        found = ids(ada.get("/Observation", params={"_id": ",".join(mine("ada-lab", "bob-lab"))}))
        assert found == mine("ada-lab")
        everything = ids(ada.get("/Observation", params={"code": "http://loinc.org|2345-7"}))
        assert _id("bob-lab") not in everything and _id("ada-lab") in everything


def test_another_patients_resource_is_404_as_if_it_did_not_exist(node: SecuredNode) -> None:
    with node.client("patient/*.rs", patient=_id("ada")) as ada:
        theirs = ada.get(f"/Observation/{_id('bob-lab')}")
        nowhere = ada.get(f"/Observation/{_id('never-was')}")
        assert theirs.status_code == nowhere.status_code == 404
        assert _id("bob") not in theirs.text
        assert ada.get(f"/Observation/{_id('ada-lab')}").status_code == 200
        assert ada.get(f"/Observation/{_id('bob-lab')}/_history/1").status_code == 404
        assert ada.get(f"/Observation/{_id('ada-lab')}/_history/1").status_code == 200
        assert ada.get(f"/Patient/{_id('bob')}").status_code == 404


def test_a_type_outside_the_scopes_is_403(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        search = ada.get("/Condition")
        read = ada.get(f"/Condition/{_id('ada-cond')}")
    assert search.status_code == read.status_code == 403
    assert search.json()["issue"][0]["code"] == "forbidden"


def test_counts_and_totals_never_include_withheld_rows(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        params = {
            "code": "http://loinc.org|2345-7,http://loinc.org|8867-4",
            "_id": ",".join(mine("ada-lab", "ada-vital", "bob-lab", "bob-vital")),
        }
        count = ada.get("/Observation", params={**params, "_summary": "count"})
        total = ada.get("/Observation", params={**params, "_total": "accurate", "_count": "1"})
    assert count.json()["total"] == 2
    assert total.json()["total"] == 2
    assert len(total.json()["entry"]) == 1 and "next" in {
        x["relation"] for x in total.json()["link"]
    }


def test_a_count_on_one_clause_counts_only_visible_rows(node: SecuredNode) -> None:
    code = {"code": "http://loinc.org|2345-7"}
    with node.client("system/Observation.rs") as backend:
        everyone = backend.get("/Observation", params={**code, "_summary": "count"}).json()
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        own = ada.get("/Observation", params={**code, "_summary": "count"}).json()
        listed = ids(ada.get("/Observation", params={**code, "_count": "500"}))
    assert own["total"] == len(listed) >= 1
    assert everyone["total"] > own["total"]


def test_includes_bring_in_only_what_the_scopes_allow(node: SecuredNode) -> None:
    params = {"_id": ",".join(mine("ada-lab")), "_include": "Observation:subject"}
    with node.client("patient/Observation.rs", patient=_id("ada")) as observations_only:
        assert ids(observations_only.get("/Observation", params=params), "include") == set()
    with node.client("patient/Observation.rs patient/Patient.rs", patient=_id("ada")) as both:
        assert ids(both.get("/Observation", params=params), "include") == mine("ada")


def test_revinclude_never_reaches_another_patients_records(node: SecuredNode) -> None:
    with node.client("system/Patient.rs patient/Observation.rs", patient=_id("ada")) as c:
        response = c.get(
            "/Patient",
            params={"_id": ",".join(mine("ada", "bob")), "_revinclude": "Observation:subject"},
        )
    assert ids(response) == mine("ada", "bob")  # system/Patient.rs: both patients
    assert ids(response, "include") == mine("ada-lab", "ada-vital")  # only Ada's observations


def test_a_chain_cannot_probe_a_type_the_token_cannot_see(node: SecuredNode) -> None:
    params = {"subject:Patient.family": f"Lovelace{RUN}"}
    with node.client("patient/Observation.rs", patient=_id("ada")) as no_patients:
        assert ids(no_patients.get("/Observation", params=params)) == set()
    with node.client("patient/Observation.rs patient/Patient.rs", patient=_id("ada")) as c:
        assert ids(c.get("/Observation", params=params)) == mine("ada-lab", "ada-vital")


def test_has_only_counts_referring_rows_the_token_can_see(node: SecuredNode) -> None:
    params = {"_has:Observation:subject:code": "http://loinc.org|2345-7"}
    with node.client("system/Patient.rs", patient=_id("ada")) as patients_only:
        assert ids(patients_only.get("/Patient", params=params)) & mine("ada", "bob") == set()
    with node.client("system/Patient.rs patient/Observation.rs", patient=_id("ada")) as c:
        assert ids(c.get("/Patient", params=params)) & mine("ada", "bob") == mine("ada")


def test_history_lists_only_visible_versions(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        type_history = ada.get("/Observation/_history", params={"_count": "500"})
        bob_history = ada.get(f"/Observation/{_id('bob-lab')}/_history")
        system_history = ada.get("/_history", params={"_count": "500"})
    seen = {e["resource"]["id"] for e in type_history.json().get("entry", []) if "resource" in e}
    assert _id("ada-lab") in seen and not seen & mine("bob-lab", "bob-vital")
    assert bob_history.status_code == 404
    everywhere = {
        e["resource"]["id"] for e in system_history.json().get("entry", []) if "resource" in e
    }
    assert _id("ada-lab") in everywhere and not everywhere & mine("bob", "bob-lab", "ada-cond")


def test_everything_is_the_own_record_and_404_for_another(node: SecuredNode) -> None:
    with node.client("patient/*.rs", patient=_id("ada")) as ada:
        own = ada.get(f"/Patient/{_id('ada')}/$everything")
        other = ada.get(f"/Patient/{_id('bob')}/$everything")
    assert mine("ada", "ada-lab", "ada-vital", "ada-cond", "org") <= ids(own)
    assert not ids(own) & mine("bob", "bob-lab", "bob-cond")
    assert other.status_code == 404


def test_a_compartment_search_of_another_patient_is_empty(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        assert ids(ada.get(f"/Patient/{_id('bob')}/Observation")) == set()
        assert ids(ada.get(f"/Patient/{_id('ada')}/Observation")) == mine("ada-lab", "ada-vital")


def test_system_search_across_types_keeps_to_the_scopes(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        response = ada.get(
            "",
            params={
                "_type": "Observation,Condition,Patient",
                "_id": ",".join(mine("ada", "ada-lab", "ada-cond", "bob-lab")),
            },
        )
    assert ids(response) == mine("ada-lab")


def test_reference_data_no_patient_owns_is_readable_with_patient_scopes(node: SecuredNode) -> None:
    with node.client("patient/*.rs", patient=_id("ada")) as ada:
        assert ada.get(f"/Organization/{_id('org')}").status_code == 200


def test_patient_scopes_without_a_patient_in_context_reach_nothing(node: SecuredNode) -> None:
    with node.client("patient/Observation.rs") as nobody:
        assert nobody.get(f"/Observation/{_id('ada-lab')}").status_code == 403


# --- granular scopes ---------------------------------------------------------------------------


def test_a_granular_scope_reaches_only_resources_matching_its_query(node: SecuredNode) -> None:
    with node.client(f"patient/Observation.rs?category={LAB}", patient=_id("ada")) as labs:
        assert ids(labs.get("/Observation")) == mine("ada-lab")
        assert labs.get(f"/Observation/{_id('ada-vital')}").status_code == 404
        assert labs.get(f"/Observation/{_id('ada-lab')}").status_code == 200


def test_granular_scopes_add_up(node: SecuredNode) -> None:
    vitals = f"{CATEGORY}|vital-signs"
    scope = f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={vitals}"
    with node.client(scope, patient=_id("ada")) as both:
        assert ids(both.get("/Observation")) == mine("ada-lab", "ada-vital")


# --- v1 and user scopes ------------------------------------------------------------------------


def test_v1_read_scopes_read_and_search_but_do_not_write(node: SecuredNode) -> None:
    with node.client("patient/*.read", patient=_id("ada")) as v1:
        assert ids(v1.get("/Condition")) == mine("ada-cond")
        new = _observation(_id("v1-new"), _id("ada"), "laboratory", "2345-7", 1)
        assert v1.put(f"/Observation/{new['id']}", json=new, headers=FHIR_JSON).status_code == 403


def test_user_scopes_of_a_patient_user_keep_to_their_compartment(node: SecuredNode) -> None:
    with node.client("user/Observation.rs", fhir_user=f"Patient/{_id('bob')}") as bob:
        assert ids(bob.get("/Observation", params={"code": "http://loinc.org|2345-7"})) & mine(
            "ada-lab", "bob-lab"
        ) == mine("bob-lab")


def test_system_scopes_see_every_patient(node: SecuredNode) -> None:
    with node.client("system/Observation.rs") as backend:
        found = ids(
            backend.get("/Observation", params={"_id": ",".join(mine("ada-lab", "bob-lab"))})
        )
    assert found == mine("ada-lab", "bob-lab")


# --- writes ------------------------------------------------------------------------------------


def _stored(node: SecuredNode, res_type: str, id: str) -> int:
    with psycopg.connect(node.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resource WHERE res_type = %s AND id = %s", (res_type, id)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_patient_may_write_into_their_own_compartment_only(node: SecuredNode) -> None:
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        own = _observation(_id("ada-new"), _id("ada"), "vital-signs", "8867-4", 60)
        posted_own = ada.post("/Observation", json=without_id(own), headers=FHIR_JSON)
        assert posted_own.status_code == 201
        own_id = posted_own.json()["id"]
        own["id"] = own_id
        own["status"] = "amended"
        assert ada.put(f"/Observation/{own_id}", json=own, headers=FHIR_JSON).status_code == 200
        foreign = _observation(_id("ada-into-bob"), _id("bob"), "vital-signs", "8867-4", 61)
        posted = without_id(foreign)
        created = ada.post("/Observation", json=posted, headers=FHIR_JSON)
        assert created.status_code == 403
    assert _stored(node, "Observation", own_id) == 1
    assert _stored(node, "Observation", _id("ada-into-bob")) == 0


def test_a_compartment_token_creates_with_post_not_at_an_id_of_its_choosing(
    node: SecuredNode,
) -> None:
    # Update-as-create would answer 201 at a free id and a refusal at someone else's: a
    # probe for which ids exist. So a token that may not change every row of the type gets
    # one answer for both (R4 http.html#update: 405, no client-defined ids).
    own = _observation(_id("ada-chosen"), _id("ada"), "vital-signs", "8867-4", 60)
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        refused = ada.put(f"/Observation/{own['id']}", json=own, headers=FHIR_JSON)
    assert refused.status_code == 405
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert "POST Observation" in refused.json()["issue"][0]["diagnostics"]
    assert _stored(node, "Observation", own["id"]) == 0
    # One that may create none is told that (of its scopes, not of the id), not "use POST".
    with node.client("patient/Observation.ru", patient=_id("ada")) as updater:
        no_create = updater.put(f"/Observation/{own['id']}", json=own, headers=FHIR_JSON)
    assert no_create.status_code == 403
    assert "create" in no_create.json()["issue"][0]["diagnostics"]
    # A token that may change every Observation may choose their ids.
    with node.client("system/Observation.cruds") as backend:
        made = backend.put(f"/Observation/{own['id']}", json=own, headers=FHIR_JSON)
    assert made.status_code == 201
    assert _stored(node, "Observation", own["id"]) == 1


def _diagnostics(response: Any, id: str) -> list[tuple[int, str]]:
    issues = response.json()["issue"]
    return [(response.status_code, i.get("diagnostics", "").replace(id, "ID")) for i in issues]


def test_another_patients_resource_cannot_be_updated_moved_or_deleted(node: SecuredNode) -> None:
    bob, unknown = _id("bob-vital"), _id("no-such-vital")
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    patch_headers = {"Content-Type": "application/json-patch+json"}
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        hijack = _observation(bob, _id("ada"), "vital-signs", "8867-4", 1)
        moved = ada.put(f"/Observation/{bob}", json=hijack, headers=FHIR_JSON)
        probed = ada.put(
            f"/Observation/{bob}", json=hijack, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
        )
        # Someone else's Observation answers a delete and a patch exactly as an unknown id.
        deleted, gone = ada.delete(f"/Observation/{bob}"), ada.delete(f"/Observation/{unknown}")
        patched = ada.patch(f"/Observation/{bob}", json=patch, headers=patch_headers)
        nothing = ada.patch(f"/Observation/{unknown}", json=patch, headers=patch_headers)
        foreign = _observation(unknown, _id("bob"), "vital-signs", "8867-4", 1)
        created = ada.put(f"/Observation/{unknown}", json=foreign, headers=FHIR_JSON)
    # Someone else's Observation answers a PUT exactly as a free id (405, no client-chosen
    # ids for this token), with or without If-Match: not 412, no version shown.
    assert moved.status_code == 405 and probed.status_code == 405
    assert created.status_code == 405
    assert _diagnostics(moved, bob) == _diagnostics(created, unknown)
    assert _diagnostics(probed, bob) == _diagnostics(created, unknown)
    assert deleted.status_code == 404 and _diagnostics(deleted, bob) == _diagnostics(gone, unknown)
    assert patched.status_code == 404
    assert _diagnostics(patched, bob) == _diagnostics(nothing, unknown)
    with node.client("system/Observation.rs") as backend:
        still = backend.get(f"/Observation/{_id('bob-vital')}").json()
    assert still["subject"]["reference"] == f"Patient/{_id('bob')}"
    assert still["meta"]["versionId"] == "1"


def test_a_transaction_with_one_forbidden_entry_stores_nothing(node: SecuredNode) -> None:
    ok = _observation(_id("tx-ok"), _id("ada"), "laboratory", "2345-7", 5)
    bad = _observation(_id("tx-bad"), _id("bob"), "laboratory", "2345-7", 6)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": without_id(r),
                "request": {"method": "POST", "url": "Observation"},
            }
            for r in (ok, bad)
        ],
    }
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        response = ada.post("", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 403
    with psycopg.connect(node.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resource WHERE res_type = 'Observation' AND content LIKE %s",
            (f"%urn:enforcement%tx-%{RUN}%",),
        ).fetchone()
    assert row is not None and row[0] == 0


def test_conditional_create_does_not_reveal_another_patients_match(node: SecuredNode) -> None:
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        own = _observation(_id("cond-new"), _id("ada"), "laboratory", "2345-7", 7)
        del own["id"]
        response = ada.post(
            "/Observation",
            json=own,
            headers={**FHIR_JSON, "If-None-Exist": f"identifier=urn:enforcement|{_id('bob-lab')}"},
        )
    assert response.status_code == 201  # Bob's match is invisible: a new resource for Ada


def test_a_read_only_token_cannot_write(node: SecuredNode) -> None:
    with node.client("system/*.rs") as reader:
        org = {"resourceType": "Organization", "name": "Nope"}
        assert reader.post("/Organization", json=org, headers=FHIR_JSON).status_code == 403


def test_the_capability_statement_of_a_secured_node_names_its_smart_endpoints(
    node: SecuredNode,
) -> None:
    with node.client() as anonymous:
        rest = anonymous.get("/metadata").json()["rest"][0]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in rest["security"]["extension"][0]["extension"]}
    assert uris["token"] == f"{node.base}/auth/token"
    assert uris["authorize"] == f"{node.base}/auth/authorize"


def test_browser_apps_may_call_from_any_origin_with_a_bearer_token(node: SecuredNode) -> None:
    with httpx.Client(base_url=node.base, timeout=30) as c:
        preflight = c.options(
            "/Observation",
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        token = node.token("patient/Observation.rs", patient=_id("ada"))
        actual = c.get(
            "/Observation",
            headers={"Origin": "http://app.example", "Authorization": f"Bearer {token}"},
        )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == "*"


def test_a_patient_deleting_their_own_resource_then_reading_it_gets_410(
    node: SecuredNode,
) -> None:
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        mine = _observation(_id("ada-gone"), _id("ada"), "vital-signs", "8867-4", 50)
        made = ada.post("/Observation", json=without_id(mine), headers=FHIR_JSON)
        assert made.status_code == 201
        mine = made.json()
        assert ada.delete(f"/Observation/{mine['id']}").status_code in (200, 204)
        assert ada.get(f"/Observation/{mine['id']}").status_code == 410
        history = ada.get(f"/Observation/{mine['id']}/_history").json()
        assert len(history["entry"]) == 2
    with node.client("patient/Observation.rs", patient=_id("bob")) as bob:
        assert bob.get(f"/Observation/{mine['id']}").status_code == 404


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("DELETE", 404),  # as an unknown id
        ("PUT", 405),  # as a free id: no ids of its choosing for this token
    ],
)
def test_a_transaction_touching_another_patients_resource_fails_as_for_an_unknown_id(
    node: SecuredNode, method: str, status: int
) -> None:
    def bundle(id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"request": {"method": method, "url": f"Observation/{id}"}}
        if method == "PUT":
            entry["resource"] = _observation(id, _id("ada"), "vital-signs", "8867-4", 70)
        return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}

    bob, unknown = _id("bob-vital"), _id(f"no-such-vital-{method}")
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        theirs = ada.post("", json=bundle(bob), headers=FHIR_JSON)
        nobodys = ada.post("", json=bundle(unknown), headers=FHIR_JSON)
    assert theirs.status_code == nobodys.status_code == status
    assert _diagnostics(theirs, bob) == _diagnostics(nobodys, unknown)
    assert _stored(node, "Observation", unknown) == 0
    with node.client("system/Observation.rs") as backend:
        kept = backend.get(f"/Observation/{bob}")
    assert kept.status_code == 200 and kept.json()["meta"]["versionId"] == "1"


def test_a_conditional_update_matching_nothing_creates_at_an_id_the_server_assigns(
    node: SecuredNode,
) -> None:
    marker = _id("cond-put")
    body = _observation(marker, _id("ada"), "vital-signs", "8867-4", 71)
    no_id = without_id(body)
    criteria = {"identifier": f"urn:enforcement|{marker}"}
    with node.client("patient/Observation.cruds", patient=_id("ada")) as ada:
        chosen = ada.put("/Observation", params=criteria, json=body, headers=FHIR_JSON)
        made = ada.put("/Observation", params=criteria, json=no_id, headers=FHIR_JSON)
        again = ada.put(
            "/Observation",
            params=criteria,
            json={**no_id, "status": "amended"},
            headers=FHIR_JSON,
        )
    # An id in the body with no match is update-as-create: not this token's to choose.
    assert chosen.status_code == 405
    assert made.status_code == 201 and made.json()["id"] != marker
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert _stored(node, "Observation", made.json()["id"]) == 1


@pytest.mark.parametrize("sort", ["-date", "code,-_lastUpdated"])
def test_sorted_pages_under_a_patient_token_are_that_patients_sorted_results(
    node: SecuredNode, sort: str
) -> None:
    """Paging a _sort-ed search by cursor (store/search/keyset.py) with a restricted caller:
    page by page, exactly the rows the caller may see, in the order a system token's search
    of that patient gives, none skipped or repeated."""

    def follow(client: httpx.Client, params: dict[str, str]) -> list[str]:
        bundle = client.get("/Observation", params=params).json()
        found = [e["resource"]["id"] for e in bundle.get("entry", [])]
        while next_url := next((k["url"] for k in bundle["link"] if k["relation"] == "next"), None):
            bundle = client.get(next_url).json()
            found += [e["resource"]["id"] for e in bundle.get("entry", [])]
        return found

    with node.client("system/Observation.rs") as backend:
        expected = follow(backend, {"subject": f"Patient/{_id('ada')}", "_sort": sort})
    with node.client("patient/Observation.rs", patient=_id("ada")) as ada:
        paged = follow(ada, {"_sort": sort, "_count": "1"})
        whole = follow(ada, {"_sort": sort, "_count": "1000"})
    assert len(expected) >= 2 and _id("ada-lab") in expected
    assert paged == whole == expected
    assert not any(id.startswith("bob-") for id in paged)
