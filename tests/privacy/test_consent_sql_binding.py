"""The consent condition binds the access's values as parameters (store/consent_sql.py):
one statement text for every patient, so that psycopg prepares it and PostgreSQL may keep
its plans — and the answers stay each access's own on every execution, however often the
same text runs with other values."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from psycopg import sql

from healthmesh.fhir.search.query import parse_query
from healthmesh.store import consent_sql
from healthmesh.store.access import APPLY, MAY_APPLY, NONE, NONE_FOR_OWN, ConsentContext
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.statements import Constant, Key, bind, bind_parts
from secured import SecuredNode, secured_node

from support import FHIR_JSON, privacy_consent, put_all

RUN = uuid.uuid4().hex[:8]
ADA, BOB, CAT = f"ada-{RUN}", f"bob-{RUN}", f"cat-{RUN}"  # Cat opts out of sharing
R = sql.Identifier("r")


def _statement(context: ConsentContext) -> sql.Composable:
    return sql.SQL(
        "SELECT r.id FROM resource r WHERE r.res_type = {t} AND r.id = {i} AND {c}"
    ).format(t=Constant("Patient"), i=Key("p-1"), c=consent_sql.consent_condition(context, R))


@pytest.mark.parametrize("rules", [MAY_APPLY, APPLY, NONE_FOR_OWN, NONE])
@pytest.mark.parametrize("purpose", [None, "TREAT"])
def test_every_patients_condition_binds_to_one_text_with_its_own_values(
    rules: str, purpose: str | None
) -> None:
    texts, values = set(), []
    for patient in ("ada", "bea"):
        context = ConsentContext(
            actors=(f"client:app-{patient}",), purpose=purpose, patient=patient, rules=rules
        )
        text, params = bind(consent_sql.consent_condition(context, R))
        texts.add(text)
        values.append(params)
        assert patient.encode() not in text
    assert len(texts) == 1
    assert values[0] != values[1]
    assert any("ada" in str(p) for p in values[0]) and not any("bea" in str(p) for p in values[0])


@pytest.mark.parametrize("rules", [MAY_APPLY, APPLY])
def test_a_named_patient_is_a_parameter_of_one_text_that_reads_its_rules_once(rules: str) -> None:
    """``Observation?patient=P`` (store/consent_sql.py, migration 0031): P's rules are one
    sub-select of the condition, P a parameter, so every patient's searches share a text."""
    context = ConsentContext(actors=("client:backend",), rules=rules)
    unnamed, _ = bind(consent_sql.consent_condition(context, R))
    texts, values = set(), []
    for named in ("ada", "bea"):
        text, params = bind(consent_sql.consent_condition(context, R, named))
        texts.add(text)
        values.append(params)
        assert named.encode() not in text and named in params
    (text,) = texts
    assert b"consent_rules_applying(" in text and b"consent_rules_applying(" not in unnamed
    assert [p for p in values[0] if p != "ada"] == [p for p in values[1] if p != "bea"]


@pytest.mark.parametrize("rules", [NONE_FOR_OWN, NONE])
def test_a_named_patient_changes_nothing_where_no_rule_applies(rules: str) -> None:
    context = ConsentContext(actors=("client:app",), patient="ada", rules=rules)
    assert bind(consent_sql.consent_condition(context, R, "ada")) == bind(
        consent_sql.consent_condition(context, R)
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("patient", "p-1")], "p-1"),
        ([("subject", "Patient/p-1"), ("code", "http://loinc.org|1-8")], "p-1"),
        ([("patient", "p-1,p-2")], None),  # either of two
        ([("patient", "p-1"), ("encounter", "e-1")], None),  # which is the patient?
        ([("patient:missing", "false")], None),
        ([("patient.name", "p-1")], None),  # a chain names no id
        ([("code", "http://loinc.org|1-8")], None),
    ],
)
def test_the_compiler_names_the_one_patient_a_search_requires(
    params: list[tuple[str, str]], named: str | None
) -> None:
    compiler = Compiler("http://node/fhir")
    compiler.where(parse_query("Observation", params).clauses, R)
    assert compiler.named_patient(R) == named
    assert compiler.named_patient(sql.Identifier("t")) is None


def test_a_patients_record_names_that_patient_whatever_its_clauses_name() -> None:
    """``$everything`` and the patient summary read one patient's record: that patient is
    the named one (Session.visible ``record_of``), on that row alias only."""
    compiler = Compiler("http://node/fhir")
    compiler.where(parse_query("Observation", [("patient", "p-1")]).clauses, R)
    compiler.reads_record_of(R, "p-9")
    assert compiler.named_patient(R) == "p-9"
    assert compiler.named_patient(sql.Identifier("t")) is None


@pytest.mark.parametrize("rules", [MAY_APPLY, APPLY, NONE])
def test_a_keyed_statement_stays_keyed_under_consent(rules: str) -> None:
    """A system token's ``Patient?_id``: its constants go into the text and PostgreSQL may keep
    one plan, as without Consents (store/statements.py)."""
    parts = bind_parts(_statement(ConsentContext(actors=("client:backend",), rules=rules)))
    assert parts.keyed()
    text, params = parts.joined(inline_constants=True)
    assert b"'Patient'" in text and "p-1" in params


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f"Binding{RUN}"}]}


def _lab(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{pid}-lab",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def _opt_out(pid: str) -> dict[str, Any]:
    return privacy_consent(f"Patient/{pid}", {"type": "deny"}, id=f"{pid}-opt-out")


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[SecuredNode]:
    with secured_node(database_url) as running:
        records = [r for pid in (ADA, BOB, CAT) for r in (_patient(pid), _lab(pid))]
        records.append(_opt_out(CAT))
        with running.client("system/*.cruds") as admin:
            response = admin.post("", json=put_all(records), headers=FHIR_JSON)
            assert response.status_code == 200, response.text
        yield running


def _ids(client: httpx.Client, path: str, **params: str) -> list[str]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


def test_each_patient_token_sees_its_own_record_on_every_execution(node: SecuredNode) -> None:
    clients = {pid: node.client("patient/*.rs", patient=pid) for pid in (ADA, BOB, CAT)}
    try:
        for _ in range(8):  # past the executions after which texts are prepared, plans kept
            for pid, client in clients.items():
                other = BOB if pid != BOB else ADA
                assert _ids(client, "/Patient", _id=pid) == [pid]  # Cat's denial is not hers
                assert _ids(client, "/Patient", _id=other) == []
                assert _ids(client, "/Observation", patient=pid) == [f"{pid}-lab"]
    finally:
        for client in clients.values():
            client.close()


def test_a_system_token_never_sees_the_opted_out_patient_however_often_it_asks(
    node: SecuredNode,
) -> None:
    with node.client("system/*.rs") as system:
        for _ in range(8):
            for pid in (ADA, BOB, CAT):
                expected = [] if pid == CAT else [pid]
                assert _ids(system, "/Patient", _id=pid) == expected
                labs = [] if pid == CAT else [f"{pid}-lab"]
                assert _ids(system, "/Observation", patient=pid) == labs
            found = system.get("/Patient", params={"family": f"Binding{RUN}", "_total": "accurate"})
            assert found.status_code == 200, found.text
            assert sorted(e["resource"]["id"] for e in found.json()["entry"]) == [ADA, BOB]
            assert found.json().get("total", 2) == 2
