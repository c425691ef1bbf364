"""A composed statement bound (store/statements.py ``bind``) means what its literals meant:
the same rows from PostgreSQL, one text per shape, percent signs and printing intact."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from healthmesh.fhir.search.query import parse_query
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.statements import Bound, bind

# (value, a condition on it as the compiler writes them: the value beside a typed operand)
CASES: list[tuple[Any, str]] = [
    ("plain", "SELECT {} = 'plain'::text"),
    ("it's", "SELECT {} = 'it''s'::text"),
    ("back\\slash", "SELECT {} = E'back\\\\slash'"),
    ("100%", "SELECT '100%'::text LIKE {}"),
    ("50%", "SELECT 'x50%' LIKE '%' || {}"),
    ("Ünïcødé ✓", "SELECT {} = 'Ünïcødé ✓'::text"),
    ("2020-01-02", "SELECT {} = date '2020-01-02'"),
    (["a", "b'c"], "SELECT 'b''c'::text = ANY({})"),
    ([], "SELECT NOT ('a'::text = ANY({}))"),
    (datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "SELECT {} < now()"),
    (date(2020, 1, 2), "SELECT {} = '2020-01-02'::date"),
    (Decimal("1.50"), "SELECT {} = 1.5::numeric"),
    (21, "SELECT {} * 100000 = 2100000"),  # an int stays an integer: no smallint overflow
    (1.5, "SELECT {} = 1.5::numeric"),
    (True, "SELECT {}"),
    (None, "SELECT {} IS NULL"),
    ([1, 2], "SELECT 2 = ANY({})"),
]


@pytest.mark.parametrize(("value", "condition"), CASES)
def test_a_bound_value_selects_what_its_literal_selects(
    database_url: str, value: Any, condition: str
) -> None:
    statement = sql.SQL(condition).format(sql.Literal(value))
    text, params = bind(statement)
    with psycopg.connect(database_url, autocommit=True) as conn:
        literal = conn.execute(statement).fetchall()
        bound = conn.execute(text, params).fetchall()
    assert literal == bound == [(True,)]


def test_values_are_parameters_and_other_literals_stay_in_the_text() -> None:
    text, params = bind(
        sql.SQL("a = {} AND b = {} LIMIT {}").format(
            sql.Literal("x"), sql.Literal(["y"]), sql.Literal(21)
        )
    )
    assert (text, params) == (b"a = %s AND b = %s LIMIT 21", ["x", ["y"]])


def test_two_searches_of_one_shape_are_one_text_with_their_own_values() -> None:
    def where(query: str) -> tuple[bytes, list[Any]]:
        parsed = parse_query("Patient", [("identifier", query), ("birthdate", "ge2001")])
        return bind(Compiler().where(parsed.clauses, sql.Identifier("r")))

    first, second = where("http://x|1"), where("http://y|2")
    assert first[0] == second[0]
    assert "1" in first[1] and "http://x" in first[1]
    assert "2" in second[1] and "http://y" in second[1]


def test_a_percent_sign_in_the_text_survives_binding(database_url: str) -> None:
    statement = sql.SQL("SELECT 'a%b' LIKE 'a%' AND {} = 'v'").format(sql.Literal("v"))
    text, params = bind(statement)
    assert b"'a%%b' LIKE 'a%%'" in text
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(text, params).fetchone() == (True,)


def test_a_placeholder_in_a_composed_statement_is_refused() -> None:
    with pytest.raises(TypeError, match="Placeholder"):
        bind(sql.SQL("a = {}").format(sql.Placeholder("x")))


def test_a_bound_piece_prints_as_the_statement_it_stands_for() -> None:
    composed = sql.SQL("a = {} AND b LIKE '5%' AND c = ANY({}) AND d = {}").format(
        sql.Literal("it's %s"), sql.Literal(["x"]), sql.Literal(3)
    )
    text, params = bind(composed)
    piece = Bound(text, params)
    assert piece.as_string(None) == composed.as_string(None)
    assert bind(sql.SQL("WHERE {}").format(piece)) == (b"WHERE " + text, params)
