"""create and conditional create (R4 http.html#create, #ccreate)."""

from __future__ import annotations

from typing import Any

from healthmesh.fhir.errors import PreconditionFailed
from healthmesh.interactions import write
from healthmesh.interactions.conditional import find_matches, parse_criteria
from healthmesh.interactions.context import FhirResult
from healthmesh.store.repository import Session


async def create(
    session: Session,
    res_type: str,
    resource: dict[str, Any],
    *,
    if_none_exist: str | None = None,
    id: str | None = None,
) -> FhirResult:
    if if_none_exist is not None:
        params = parse_criteria(if_none_exist.lstrip("?"), where="If-None-Exist")
        matches = await find_matches(session, res_type, params)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist matches more than one {res_type}; make the criteria more selective",
                code="multiple-matches",
            )
        if matches:
            existing = await session.current(res_type, matches[0])
            return FhirResult(status=200, version=existing)
    version = await write.create(session, resource, res_type, id=id)
    return FhirResult(status=201, version=version)
