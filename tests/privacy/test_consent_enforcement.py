"""Patients' Consents and the sensitive-data default, enforced inside queries, over HTTP.

Ada and Bob; Ada has lab and vital-sign Observations, a Condition and an Observation labelled
PSY (behavioural health). Recipients: a clinic backend (organization org-clinic, purpose
TREAT), a payer backend (org-payer, HPAYMT), and apps acting for Ada with her patient token.
Ada writes her Consents herself, with her own token, through the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from healthmesh.fhir.consent import CATEGORY_SYSTEM, CLIENT_ID_SYSTEM, PURPOSE_SYSTEM
from secured import SecuredNode, secured_node

from support import FHIR_JSON

RUN = uuid.uuid4().hex[:8]
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SCOPE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}


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
    _obs("ada-vital", "ada", "vital-signs"),
    _obs(
        "ada-psy",
        "ada",
        "survey",
        meta={
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
            ]
        },
    ),
    _obs("bob-lab", "bob", "laboratory"),
    {
        "resourceType": "Condition",
        "id": _id("ada-cond"),
        "subject": {"reference": f"Patient/{_id('ada')}"},
        "code": {"text": "asthma"},
    },
]
ADA_ROWS = {_id(n) for n in ("ada", "ada-lab", "ada-vital", "ada-psy", "ada-cond")}
ADA_PLAIN = ADA_ROWS - {_id("ada-psy")}


def _load(node: SecuredNode) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in RECORDS
        ],
    }
    with node.client("system/*.cruds") as admin:
        response = admin.post("", json=bundle, headers=FHIR_JSON)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        _load(running)
        yield running


def seen(client: httpx.Client) -> set[str]:
    """Every resource of the test run the client can find, by type-level searches."""
    found: set[str] = set()
    for res_type in ("Patient", "Observation", "Condition"):
        ids = [r["id"] for r in RECORDS if r["resourceType"] == res_type]
        response = client.get(f"/{res_type}", params={"_id": ",".join(ids)})
        if response.status_code == 403:
            continue
        assert response.status_code == 200, response.text
        found |= {e["resource"]["id"] for e in response.json().get("entry", [])}
    return found


def clinic(node: SecuredNode) -> httpx.Client:
    return node.client(
        "system/*.rs",
        client_id=f"clinic-{RUN}",
        organization="org-clinic",
        purpose_of_use="TREAT",
    )


def payer(node: SecuredNode) -> httpx.Client:
    return node.client(
        "system/*.rs", client_id=f"payer-{RUN}", organization="org-payer", purpose_of_use="HPAYMT"
    )


def ada_app(node: SecuredNode, client_id: str = "ada-app") -> httpx.Client:
    return node.client(
        "patient/*.cruds",
        client_id=f"{client_id}-{RUN}",
        patient=_id("ada"),
        purpose_of_use="PATRQT",
    )


ConsentWriter = Callable[[dict[str, Any]], str]


@pytest.fixture
def consents(node: SecuredNode) -> Iterator[ConsentWriter]:
    """Ada writes Consents with her own token; they are deleted after the test."""
    written: list[str] = []
    with ada_app(node) as ada:

        def write(provision: dict[str, Any]) -> str:
            body = {
                "resourceType": "Consent",
                "status": "active",
                "scope": SCOPE,
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{_id('ada')}"},
                "provision": provision,
            }
            response = ada.post("/Consent", json=body, headers=FHIR_JSON)
            assert response.status_code == 201, response.text
            written.append(response.json()["id"])
            return str(response.json()["id"])

        yield write
        for consent_id in written:
            assert ada.delete(f"/Consent/{consent_id}").status_code in (200, 204)


def category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CATEGORY_SYSTEM, "code": code}]}]


def purpose(code: str) -> list[dict[str, Any]]:
    return [{"system": PURPOSE_SYSTEM, "code": code}]


RECIPIENT = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


def app_actor(client_id: str) -> list[dict[str, Any]]:
    identifier = {"system": CLIENT_ID_SYSTEM, "value": f"{client_id}-{RUN}"}
    return [{"role": RECIPIENT, "reference": {"identifier": identifier}}]


# --- defaults ------------------------------------------------------------------------------


def test_without_consents_an_organization_sees_the_record_but_not_sensitive_data(
    node: SecuredNode,
) -> None:
    with clinic(node) as c:
        visible = seen(c)
    assert visible >= ADA_PLAIN
    assert _id("ada-psy") not in visible


def test_patients_always_see_their_own_sensitive_data(node: SecuredNode) -> None:
    with ada_app(node) as ada:
        assert seen(ada) >= ADA_ROWS


def test_marketing_never_sees_patient_data(node: SecuredNode) -> None:
    with node.client("system/*.rs", client_id=f"ads-{RUN}", purpose_of_use="HMARKT") as ads:
        assert seen(ads) == set()


# --- the patient's decisions ----------------------------------------------------------------


def test_an_opt_out_hides_the_record_on_the_next_request_and_revoking_restores_it(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    with clinic(node) as c:  # one token, issued before the decision
        assert seen(c) >= ADA_PLAIN
        consent_id = consents({"type": "deny"})
        assert seen(c) & ADA_ROWS == set()
        assert _id("bob-lab") in seen(c)  # Bob said nothing
        assert c.get(f"/Observation/{_id('ada-lab')}").status_code == 404
        with ada_app(node) as ada:
            assert ada.delete(f"/Consent/{consent_id}").status_code in (200, 204)
        assert seen(c) >= ADA_PLAIN


def test_an_opted_out_patient_still_sees_their_own_record(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "deny"})
    with ada_app(node) as ada:
        assert seen(ada) >= ADA_ROWS


def test_a_category_exception_withholds_only_that_category(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "permit", "provision": [{"type": "deny", "code": category("labs")}]})
    with clinic(node) as c:
        visible = seen(c)
    assert _id("ada-lab") not in visible
    assert {_id("ada-vital"), _id("ada-cond"), _id("ada")} <= visible


def test_a_deny_for_one_recipient_leaves_the_others(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "deny", "actor": app_actor("payer")})
    with payer(node) as p:
        assert seen(p) & ADA_ROWS == set()
    with clinic(node) as c:
        assert seen(c) >= ADA_PLAIN


def test_an_organization_can_be_named_by_its_reference(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents(
        {
            "type": "deny",
            "actor": [{"role": RECIPIENT, "reference": {"reference": "Organization/org-clinic"}}],
        }
    )
    with clinic(node) as c:
        assert seen(c) & ADA_ROWS == set()
    with payer(node) as p:
        assert seen(p) >= ADA_PLAIN


def test_purpose_of_use_limits_what_is_shared(node: SecuredNode, consents: ConsentWriter) -> None:
    consents({"type": "deny", "provision": [{"type": "permit", "purpose": purpose("TREAT")}]})
    with clinic(node) as treating:
        assert seen(treating) >= ADA_PLAIN
    with payer(node) as paying:
        assert seen(paying) & ADA_ROWS == set()


def test_sensitive_data_is_shared_only_with_an_explicit_permit(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents(
        {
            "type": "permit",
            "provision": [
                {
                    "type": "permit",
                    "actor": app_actor("clinic"),
                    "securityLabel": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "PSY",
                        }
                    ],
                }
            ],
        }
    )
    with clinic(node) as c:
        assert _id("ada-psy") in seen(c)
    with payer(node) as p:
        assert _id("ada-psy") not in seen(p)


def test_deny_wins_over_a_permit_of_equal_specificity(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "permit", "code": category("labs")})
    consents({"type": "deny", "code": category("labs")})
    with clinic(node) as c:
        assert _id("ada-lab") not in seen(c)


def test_a_consent_outside_its_period_has_no_effect(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "deny", "period": {"start": "2020-01-01", "end": "2020-12-31"}})
    with clinic(node) as c:
        assert seen(c) >= ADA_PLAIN


def test_a_patient_can_deny_an_app_access_to_their_own_record(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "permit", "provision": [{"type": "deny", "actor": app_actor("nosy-app")}]})
    with ada_app(node, "nosy-app") as nosy:
        assert seen(nosy) & ADA_ROWS == set()
    with ada_app(node) as trusted:
        assert seen(trusted) >= ADA_ROWS


def test_counts_and_totals_leave_out_withheld_rows(
    node: SecuredNode, consents: ConsentWriter
) -> None:
    consents({"type": "permit", "provision": [{"type": "deny", "code": category("labs")}]})
    ids = ",".join(_id(n) for n in ("ada-lab", "ada-vital", "ada-psy", "bob-lab"))
    with clinic(node) as c:
        count = c.get("/Observation", params={"_id": ids, "_summary": "count"}).json()["total"]
        total = c.get("/Observation", params={"_id": ids, "_total": "accurate"}).json()["total"]
    assert count == total == 2  # Ada's vital signs and Bob's lab: not her labs, not PSY


def test_includes_and_everything_obey_consent(node: SecuredNode, consents: ConsentWriter) -> None:
    consents({"type": "permit", "provision": [{"type": "deny", "code": category("labs")}]})
    with clinic(node) as c:
        included = c.get(
            "/Patient",
            params={"_id": _id("ada"), "_revinclude": "Observation:subject"},
        ).json()
        everything = c.get(f"/Patient/{_id('ada')}/$everything").json()
    revincluded = {e["resource"]["id"] for e in included.get("entry", [])}
    assert _id("ada-vital") in revincluded and _id("ada-lab") not in revincluded
    whole = {e["resource"]["id"] for e in everything.get("entry", [])}
    assert _id("ada-vital") in whole and not whole & {_id("ada-lab"), _id("ada-psy")}


# --- writing Consents ------------------------------------------------------------------------


def test_a_patient_cannot_write_a_consent_for_someone_else(node: SecuredNode) -> None:
    body = {
        "resourceType": "Consent",
        "status": "active",
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{_id('bob')}"},
        "provision": {"type": "deny"},
    }
    with ada_app(node) as ada:
        assert ada.post("/Consent", json=body, headers=FHIR_JSON).status_code == 403
    with clinic(node) as c:
        assert _id("bob-lab") in seen(c)


def test_a_malformed_consent_is_refused_naming_the_element(node: SecuredNode) -> None:
    body = {
        "resourceType": "Consent",
        "status": "active",
        "scope": SCOPE,
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{_id('ada')}"},
        "provision": {"type": "deny", "code": category("horoscopes")},
    }
    with ada_app(node) as ada:
        response = ada.post("/Consent", json=body, headers=FHIR_JSON)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Consent.provision.code[0]"]
    assert "horoscopes" not in issue["diagnostics"] or "data categories" in issue["diagnostics"]


def test_opt_in_deployments_share_only_what_a_patient_permits(
    node: SecuredNode, database_url: str
) -> None:
    # ``node`` loads the records (into the database both nodes serve): this test needs them
    # whichever tests ran before it.
    with secured_node(database_url, consent_default="opt-in") as strict:
        with clinic(strict) as c:
            assert seen(c) & ADA_ROWS == set()
        with ada_app(strict) as ada:
            assert seen(ada) >= ADA_ROWS
            body = {
                "resourceType": "Consent",
                "status": "active",
                "scope": SCOPE,
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{_id('ada')}"},
                "provision": {"type": "permit", "actor": app_actor("clinic")},
            }
            created = ada.post("/Consent", json=body, headers=FHIR_JSON)
            assert created.status_code == 201, created.text
            try:
                with clinic(strict) as c:
                    assert seen(c) >= ADA_PLAIN
                with payer(strict) as p:
                    assert seen(p) & ADA_ROWS == set()
            finally:
                ada.delete(f"/Consent/{created.json()['id']}")


def test_sensitive_content_is_labelled_at_write_time_and_withheld_by_default(
    node: SecuredNode,
) -> None:
    alcoholism = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{_id('ada')}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "7200002"}]},
    }
    with ada_app(node) as ada:
        written = ada.post("/Condition", json=alcoholism, headers=FHIR_JSON)
        assert written.status_code == 201, written.text
        labels = {s["code"] for s in written.json()["meta"]["security"]}
        assert {"ETH", "R"} <= labels
        eth = written.json()["id"]
        assert ada.get(f"/Condition/{eth}").status_code == 200
        labelled = ada.get("/Condition", params={"_security": "ETH", "_id": eth})
        assert len(labelled.json().get("entry", [])) == 1
    with clinic(node) as c:
        assert c.get(f"/Condition/{eth}").status_code == 404
        assert c.get(f"/Condition/{_id('ada-cond')}").status_code == 200
