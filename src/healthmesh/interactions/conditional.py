"""Conditional create, update and delete: find the resources a query names (R4 http.html#ccreate).

Criteria are compiled strictly — an unknown parameter is a 400, never silently dropped, since
ignoring a condition would match more than the client meant. Writers with the same criteria
are serialised by a transaction-scoped advisory lock, so concurrent conditional creates with
one identifier create exactly one resource.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.store.criteria import compile_criteria
from healthmesh.store.repository import Session


def parse_criteria(query: str, *, where: str) -> list[tuple[str, str]]:
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise InvalidRequest(f"{where} has no search criteria", expression=where)
    return params


async def find_matches(
    session: Session, res_type: str, params: list[tuple[str, str]], *, limit: int = 2
) -> list[str]:
    criteria = compile_criteria(params, strict=True)
    normalised = "&".join(f"{k}={v}" for k, v in sorted(params))
    await session.lock(f"conditional:{res_type}?{normalised}")
    return await session.find_ids(res_type, criteria.condition, limit)
