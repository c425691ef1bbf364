"""A patient token's scope condition is hidden from the planner's estimates only where the
query's own clauses already name that patient (store/access.py ``_owned_by``), and selects
the same rows either way."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from healthmesh.fhir.search.query import parse_query
from healthmesh.store.access import RowRule, Visibility
from healthmesh.store.search.compiler import Compiler

ADA = "ada-scope"
VISIBILITY = Visibility({"s": (RowRule(patient=ADA),)})


def _where(params: list[tuple[str, str]]) -> str:
    compiler = Compiler("http://node/fhir", visibility=VISIBILITY)
    r = sql.Identifier("r")
    clauses = compiler.where(parse_query("Observation", params).clauses, r)
    visible = compiler.visible("s", r, "Observation")
    return sql.SQL("{} AND {}").format(clauses, visible).as_string(None)


@pytest.mark.parametrize(
    "value", [ADA, f"Patient/{ADA}", f"http://node/fhir/Patient/{ADA}"], ids=["id", "type", "url"]
)
def test_a_query_naming_the_tokens_patient_hides_the_scope_from_estimates(value: str) -> None:
    where = _where([("patient", value), ("code", "http://loinc.org|10834-0")])
    assert f"CASE WHEN \"r\".patient_id = '{ADA}' THEN true ELSE false END" in where


@pytest.mark.parametrize(
    "params",
    [
        [("code", "http://loinc.org|10834-0")],  # the scope is the selective condition
        [("patient", "someone-else")],
        [("patient", f"{ADA},someone-else")],
        [("patient:missing", "true")],
    ],
    ids=["no patient", "another patient", "two patients", "missing"],
)
def test_other_queries_keep_the_scope_condition_the_planner_can_use(
    params: list[tuple[str, str]],
) -> None:
    where = _where(params)
    assert "CASE WHEN" not in where
    assert f"\"r\".patient_id = '{ADA}'" in where


def test_both_forms_select_the_same_rows(database_url: str) -> None:
    plain = sql.SQL("r.patient_id = {}").format(sql.Literal(ADA))
    hidden = sql.SQL("CASE WHEN r.patient_id = {} THEN true ELSE false END").format(
        sql.Literal(ADA)
    )
    rows = "(VALUES ('a', {ada}), ('b', 'other'), ('c', NULL)) AS r(id, patient_id)"
    with psycopg.connect(database_url) as conn:
        found = [
            conn.execute(
                sql.SQL("SELECT id FROM " + rows + " WHERE {} ORDER BY id").format(
                    condition, ada=sql.Literal(ADA)
                )
            ).fetchall()
            for condition in (plain, hidden)
        ]
    assert found[0] == found[1] == [("a",)]
