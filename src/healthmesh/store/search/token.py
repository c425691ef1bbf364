"""Token search (R4 search.html#token): code, system|code, |code, system|; :text, :of-type."""

from __future__ import annotations

import re
from functools import lru_cache

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.fhir.search.normalize import normalize
from healthmesh.fhir.search.query import Clause
from healthmesh.fhir.search_values import parse_token
from healthmesh.store.search.sqlbits import all_of, any_of, col, like_prefix
from healthmesh.store.statements import Key

# A path to an element of type Identifier, as the R4 definitions write them
# (``Patient.identifier``, ``DocumentReference.masterIdentifier``).
_IDENTIFIER_PATH = re.compile(r"[A-Z][A-Za-z]*\.(identifier|masterIdentifier)")


@lru_cache(maxsize=1024)
def _identifier_paths(expression: str | None) -> bool:
    if not expression:
        return False
    return all(_IDENTIFIER_PATH.fullmatch(p.strip()) for p in expression.split("|"))


def identifies(clause: Clause) -> bool:
    """Whether the clause's values are business identifiers (the parameter's every path is an
    Identifier element, no modifier): a value with a code then names one resource, or a few
    (R4 datatypes.html#Identifier: "a numeric or alphanumeric string that is associated
    with a single object or entity"), so its SQL values are keys (store/statements.py)."""
    return (
        clause.param.type == "token"
        and clause.modifier is None
        and _identifier_paths(clause.param.expression)
    )


def value_condition(clause: Clause, i: sql.Identifier, raw: str) -> sql.Composable:
    if clause.modifier == "text":
        return sql.SQL("{} LIKE {}").format(
            col(i, "display"), sql.Literal(like_prefix(normalize(raw)))
        )
    if clause.modifier == "of-type":
        parts = raw.split("|")
        if len(parts) != 3 or not all(parts[1:]):
            raise InvalidRequest(f"{clause.name} takes system|code|value", expression=clause.name)
        system, code, value = parts
        conds = [sql.SQL("{} = {}").format(col(i, "code"), sql.Literal(f"{code}|{value}"))]
        if system:
            conds.append(sql.SQL("{} = {}").format(col(i, "system"), sql.Literal(system)))
        return all_of(conds)
    if clause.modifier in ("in", "not-in") and raw.startswith("|"):
        # an expanded ValueSet code without a system: any system, as the ValueSet did not say
        return sql.SQL("{} = {}").format(col(i, "code"), sql.Literal(raw[1:]))
    token = parse_token(clause.name, raw)
    # An identifier's value with its system is a key; ``system|`` alone selects a whole
    # system's identifiers, a plain value.
    literal: type[sql.Literal] = (
        Key if token.code is not None and identifies(clause) else sql.Literal
    )
    conds = []
    if token.code is not None:
        conds.append(sql.SQL("{} = {}").format(col(i, "code"), literal(token.code)))
    if token.system == "":
        conds.append(sql.SQL("{} IS NULL").format(col(i, "system")))
    elif token.system is not None:
        conds.append(sql.SQL("{} = {}").format(col(i, "system"), literal(token.system)))
    return all_of(conds)


def condition(clause: Clause, i: sql.Identifier) -> sql.Composable:
    return any_of([value_condition(clause, i, v) for v in clause.values])


def index_param(clause: Clause) -> str:
    return f"{clause.param.code}:of-type" if clause.modifier == "of-type" else clause.param.code
