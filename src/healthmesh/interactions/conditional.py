"""Conditional create, update and delete: find the resources a query names (R4 http.html#ccreate).

Criteria are compiled strictly — an unknown parameter is a 400, never silently dropped, since
ignoring a condition would match more than the client meant. Writers with the same criteria
are serialised by a transaction-scoped advisory lock, so concurrent conditional creates with
one identifier create exactly one resource.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest, NotSupported
from healthmesh.fhir.search.query import RESULT_PARAMETERS, parse_query
from healthmesh.interactions.valuesets import expand_value_sets
from healthmesh.store.repository import Session
from healthmesh.store.search.compiler import Compiler


def parse_criteria(query: str, *, where: str) -> list[tuple[str, str]]:
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise InvalidRequest(f"{where} has no search criteria", expression=where)
    return params


async def find_matches(
    session: Session, res_type: str, params: list[tuple[str, str]], *, limit: int = 2
) -> list[str]:
    criteria = [(k, v) for k, v in params if k.partition(":")[0] not in RESULT_PARAMETERS]
    parsed = parse_query(res_type, criteria)
    if parsed.unknown:
        raise NotSupported(
            f"Search parameter '{parsed.unknown[0]}' is not known for {res_type}",
            expression=parsed.unknown[0],
        )
    if not parsed.clauses:
        raise InvalidRequest("Conditional criteria must name at least one search parameter")
    normalised = "&".join(f"{k}={v}" for k, v in sorted(criteria))
    await session.lock(f"conditional:{res_type}?{normalised}")
    clauses = await expand_value_sets(session, parsed.clauses)
    # Only what the caller may search can match: a conditional write must not reveal, by
    # creating or not, that someone else's resource meets the criteria.
    compiler = Compiler(visibility=session.visibility)
    r = sql.Identifier("r")
    where = sql.SQL("{} AND {}").format(
        compiler.where(clauses, r), compiler.visible("s", r, res_type)
    )
    return await session.find_ids(res_type, where, limit)
