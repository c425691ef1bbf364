"""A statement whose request values are all keys (identifiers, ids) carries its shape's
constants in its text and binds the keys alone, so PostgreSQL keeps one generic plan for it
(store/statements.py); any other value, and the statement is bound as before: planned for
its values on every execution. Policy conditions are never keys."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from healthmesh.fhir.search.query import parse_query
from healthmesh.interactions.context import FhirRequest
from healthmesh.interactions.dispatch import dispatch
from healthmesh.interactions.transaction import transaction
from healthmesh.store.access import RowRule, Visibility
from healthmesh.store.repository import Repository
from healthmesh.store.search import token
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.statements import Constant, Key, bind

from support import patient

R = sql.Identifier("r")


def _statement(
    res_type: str, params: list[tuple[str, str]], visibility: Visibility | None = None
) -> tuple[bytes, list[Any]]:
    """The search's WHERE as search() writes it (interactions/search.py), bound."""
    compiler = Compiler("http://node/fhir", visibility=visibility)
    where = sql.SQL("r.res_type = {} AND NOT r.deleted AND {} AND {}").format(
        Constant(res_type),
        compiler.where(parse_query(res_type, params).clauses, R),
        compiler.visible("s", R, res_type),
    )
    return bind(where)


def test_an_identifier_search_binds_its_values_alone_and_writes_its_shape() -> None:
    text, params = _statement("Patient", [("identifier", "http://x.org/mrn|123")])
    assert params == ["123", "http://x.org/mrn"]
    assert b"r.res_type = 'Patient'" in text
    assert b".param = 'identifier'" in text
    assert text.count(b"%s") == 2


def test_searches_of_one_shape_share_a_text_and_never_another_shapes() -> None:
    first = _statement("Patient", [("identifier", "http://x|1")])
    second = _statement("Patient", [("identifier", "http://y|2")])
    assert first[0] == second[0]
    assert (first[1], second[1]) == (["1", "http://x"], ["2", "http://y"])
    others = [
        _statement("Practitioner", [("identifier", "http://x|1")]),
        _statement("Patient", [("identifier", "1")]),
        _statement("Patient", [("identifier", "|1")]),
        _statement("Patient", [("identifier", "http://x|1,http://y|2")]),
        _statement("Patient", [("identifier:not", "http://x|1")]),
        _statement("Patient", [("_id", "p1")]),
    ]
    texts = {first[0], *(text for text, _ in others)}
    assert len(texts) == len(others) + 1


def test_one_plain_value_binds_the_whole_statement_as_before() -> None:
    text, params = _statement("Patient", [("identifier", "http://x|1"), ("gender", "female")])
    assert params[:3] == ["Patient", "Patient", "identifier"]
    assert "female" in params and "1" in params
    assert b"'Patient'" not in text


@pytest.mark.parametrize(
    "params",
    [
        [("identifier", "http://x.org/mrn|")],  # a whole system's identifiers
        [("identifier:not", "http://x|1")],  # nearly every row
        [("code", "http://loinc.org|8867-4")],  # a code may match one row or a million
        [("_id:not", "p1")],
        [("identifier:of-type", "http://t|MR|123")],
    ],
    ids=["system alone", "not", "code", "id not", "of-type"],
)
def test_values_that_do_not_identify_are_plain(params: list[tuple[str, str]]) -> None:
    text, bound = _statement("Patient" if params[0][0] != "code" else "Observation", params)
    assert b"'Patient'" not in text and b"'Observation'" not in text
    assert bound[0] in ("Patient", "Observation")


def test_only_identifier_elements_make_keys() -> None:
    def identifies(res_type: str, name: str) -> bool:
        return token.identifies(parse_query(res_type, [(name, "x|1")]).clauses[0])

    assert identifies("Patient", "identifier")
    assert identifies("Observation", "identifier")  # clinical-identifier, masterIdentifier too
    assert not identifies("Patient", "identifier:not")
    assert not identifies("Observation", "code")
    assert not identifies("Patient", "gender")


def test_a_patient_tokens_condition_keeps_the_statement_bound() -> None:
    visibility = Visibility({"s": (RowRule(patient="ada"),)})
    text, params = _statement("Patient", [("identifier", "http://x|1")], visibility)
    assert "ada" in params  # the scope's patient, bound as before: planned for its value
    assert b"patient_id = %s" in text
    assert b"'Patient'" not in text


def test_a_constant_written_into_the_text_keeps_its_quotes_and_percent_signs(
    database_url: str,
) -> None:
    statement = sql.SQL("SELECT {} = 'it''s 50%' AND {} = 'k'").format(
        Constant("it's 50%"), Key("k")
    )
    text, params = bind(statement)
    assert params == ["k"] and b"'it''s 50%%'" in text
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(text, params).fetchone() == (True,)
        assert conn.execute(statement).fetchone() == (True,)


def _request(method: str, path: str, params: list[tuple[str, str]], body: Any = None) -> Any:
    return FhirRequest(
        method=method,
        path=tuple(path.split("/")) if path else (),
        params=params,
        body=body,
        base="http://test/fhir",
    )


def _searched_on_one_connection(
    database_url: str, bundle: dict[str, Any], searches: list[list[tuple[str, str]]]
) -> tuple[list[list[dict[str, Any]]], list[tuple[str, int, int]]]:
    """``bundle`` stored, then each Patient search run in turn on one connection: the
    resources each found, and that connection's prepared searches as (statement, generic
    plans, custom plans) from pg_prepared_statements."""

    async def go() -> tuple[list[list[dict[str, Any]]], list[tuple[str, int, int]]]:
        repository = Repository(database_url, min_size=1, max_size=1)
        await repository.open()
        try:
            await transaction(repository, _request("POST", "", [], bundle))
            found = []
            async with repository.session(write=False) as session:
                for params in searches:
                    result = await dispatch(session, _request("GET", "Patient", params))
                    assert result.body is not None
                    body = orjson.loads(orjson.dumps(result.body))
                    found.append([e["resource"] for e in body.get("entry", [])])
                cur = await session.conn.execute(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                )
                plans = [(str(s), int(g), int(c)) for s, g, c in await cur.fetchall()]
            return found, plans
        finally:
            await repository.close()

    found, plans = asyncio.run(go())
    return found, [p for p in plans if p[0].startswith("SELECT r.res_type, r.id, r.content")]


def test_identifier_searches_find_their_own_patient_under_one_kept_plan(
    database_url: str,
) -> None:
    system = f"urn:plan-keys:{uuid.uuid4().hex[:8]}"
    mrns = [f"mrn-{n}" for n in range(4)]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(identifier=[{"system": system, "value": mrn}]),
                "request": {"method": "POST", "url": "Patient"},
            }
            for mrn in mrns
        ],
    }
    by_identifier = [[("identifier", f"{system}|{mrns[n % len(mrns)]}")] for n in range(16)]
    by_gender = [[("gender", "female")]] * 16  # a plain value
    found, searches = _searched_on_one_connection(database_url, bundle, by_identifier + by_gender)
    values = [[i["value"] for r in resources for i in r["identifier"]] for resources in found[:16]]
    assert values == [[mrns[n % len(mrns)]] for n in range(16)]
    keyed = [p for p in searches if "'identifier'" in p[0]]
    plain = [p for p in searches if "'identifier'" not in p[0]]
    assert len(keyed) == 1 and keyed[0][1] > 0  # a generic plan, kept
    # Bound as before, type and parameter name too: PostgreSQL weighs its plans per value.
    assert len(plain) == 1 and "r.res_type = $1" in plain[0][0]


@pytest.mark.parametrize(
    "value", ["http://x|1", "it's|50%", "|back\\", "ñ✓", "a|b,c|d", "http://x|"]
)
def test_an_identifier_clause_kept_by_shape_binds_as_compiling_it_does(value: str) -> None:
    clause = parse_query("Patient", [("identifier", value)]).clauses[0]
    for _ in range(2):  # learnt, then taken from the kept shape
        kept = bind(sql.SQL("{} AND {}").format(Constant("Patient"), Compiler().clause(clause, R)))
        compiled = bind(
            sql.SQL("{} AND {}").format(Constant("Patient"), Compiler()._clause(clause, R))
        )
        assert kept == compiled


def test_id_searches_find_their_own_patient_under_one_kept_plan(database_url: str) -> None:
    """One id is one value (``r.id = $1``), whose generic plan PostgreSQL keeps; as
    ``r.id = ANY($1)`` its generic plan expected several rows and was never chosen."""
    ids = [f"plan-id-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(id=i), "request": {"method": "PUT", "url": f"Patient/{i}"}}
            for i in ids
        ],
    }
    by_id = [[("_id", ids[n % len(ids)])] for n in range(16)]
    found, searches = _searched_on_one_connection(
        database_url, bundle, [*by_id, [("_id", f"{ids[0]},{ids[1]}")]]
    )
    assert [[r["id"] for r in resources] for resources in found[:16]] == [
        [ids[n % len(ids)]] for n in range(16)
    ]
    assert sorted(r["id"] for r in found[16]) == sorted(ids[:2])
    one_id = [p for p in searches if '"r".id = $1' in p[0]]
    assert len(one_id) == 1 and one_id[0][1] > 0  # a generic plan, kept
