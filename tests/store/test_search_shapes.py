"""A token clause taken from its shape's kept text (store/search/shapes.py) is exactly the
clause compiling it gives: the same text, the same values, whatever the values say."""

from __future__ import annotations

import random
from typing import Any

import pytest
from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search.query import Clause, parse_query
from healthmesh.fhir.search_values import parse_token
from healthmesh.store.search import shapes
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.statements import Bound, bind

R = sql.Identifier("r")
PIECES = ["a", "B-7", "http://x.org/fhir", "it's", "50%", "back\\", "ñ✓", "a.b", "Patient"]


def _token_value(rng: random.Random) -> str:
    code, system = rng.choice(PIECES), rng.choice(PIECES)
    return rng.choice([code, f"{system}|{code}", f"|{code}", f"{system}|", f"{system}|{code}|x"])


def _compiled_without_shapes(
    res_type: str, params: list[tuple[str, str]]
) -> tuple[bytes, list[Any]]:
    compiler = Compiler()
    parsed = parse_query(res_type, params)
    return bind(sql.SQL(" AND ").join(compiler._clause(c, R) for c in parsed.clauses))


def _compiled(res_type: str, params: list[tuple[str, str]]) -> tuple[bytes, list[Any]]:
    compiler = Compiler()
    parsed = parse_query(res_type, params)
    return bind(sql.SQL(" AND ").join(compiler.clause(c, R) for c in parsed.clauses))


def test_kept_clauses_are_what_compiling_them_gives() -> None:
    rng = random.Random(3)
    names = ["code", "category", "_tag", "identifier:not", "code:not", "status"]
    for _ in range(400):
        params = [
            (rng.choice(names), ",".join(_token_value(rng) for _ in range(rng.randint(1, 3))))
            for _ in range(rng.randint(1, 3))
        ]
        if rng.random() < 0.3:  # a clause that is never kept, numbering aliases ahead
            params.insert(0, ("date", "ge2020-01-01"))
        res_type = (
            "Observation" if not any(n.startswith("identifier") for n, _ in params) else "Patient"
        )
        if res_type == "Patient":
            params = [(n, v) for n, v in params if n in ("identifier:not", "_tag")] or params[:1]
        expected = _compiled_without_shapes(res_type, params)
        assert _compiled(res_type, params) == expected, params
        assert _compiled(res_type, params) == expected, params  # the kept shape, again


def test_a_plain_token_clause_comes_bound_from_its_shape() -> None:
    parsed = parse_query("Patient", [("identifier", "http://x|1")])
    assert isinstance(Compiler().clause(parsed.clauses[0], R), Bound)


def test_a_shape_whose_compilation_reads_the_values_is_not_kept() -> None:
    clause = parse_query("Patient", [("identifier", "Code")]).clauses[0]

    def lower_cased(c: Clause) -> tuple[sql.Composable, int]:
        # A compilation that transforms a piece (the stand-in's marker is lower case already,
        # so only the real compilation tells).
        code = parse_token(c.name, c.values[0]).code or ""
        return sql.SQL("code = {}").format(sql.Literal(code.lower())), 0

    assert shapes.kept_token_clause(clause, ("test-lower", 1), 0, lower_cased) is None
    assert shapes.kept_token_clause(clause, ("test-lower", 1), 0, lower_cased) is None

    clause = parse_query("Patient", [("identifier", "http://x|Code")]).clauses[0]

    def branching(c: Clause) -> tuple[sql.Composable, int]:
        # A compilation that branches on what a value says (here: its system).
        if c.values[0].startswith("http://x|"):
            return sql.SQL("special"), 0
        return sql.SQL("code = {}").format(sql.Literal(c.values[0])), 0

    assert shapes.kept_token_clause(clause, ("test-branch", 1), 0, branching) is None


def test_a_malformed_token_value_is_refused_naming_its_parameter() -> None:
    parsed = parse_query("Patient", [("identifier", "|")])
    with pytest.raises(InvalidRequest) as refused:
        Compiler().clause(parsed.clauses[0], R)
    assert "identifier" in str(refused.value)


def test_a_shape_whose_stand_in_is_refused_is_not_kept() -> None:
    clause = parse_query("Patient", [("identifier", "http://x|1")]).clauses[0]

    def picky(c: Clause) -> tuple[sql.Composable, int]:
        if "\x00" in c.values[0]:
            raise ValueError("no NUL here")
        return sql.SQL("code = {}").format(sql.Literal(c.values[0])), 0

    assert shapes.kept_token_clause(clause, ("test-picky", 1), 0, picky) is None
