"""update and conditional update (R4 http.html#update, #cond-update)."""

from __future__ import annotations

from typing import Any

from healthmesh.fhir.errors import InvalidRequest, PreconditionFailed
from healthmesh.fhir.ids import new_id
from healthmesh.interactions import write
from healthmesh.interactions.conditional import find_matches
from healthmesh.interactions.context import FhirResult, check_id
from healthmesh.store.repository import Session


async def update(
    session: Session,
    res_type: str,
    id: str,
    resource: dict[str, Any],
    *,
    if_match: str | None = None,
) -> FhirResult:
    check_id(id)
    version, created = await write.update(
        session, resource, res_type, id, if_match=write.parse_if_match(if_match)
    )
    return FhirResult(status=201 if created else 200, version=version)


async def conditional_update(
    session: Session,
    res_type: str,
    params: list[tuple[str, str]],
    resource: dict[str, Any],
    *,
    if_match: str | None = None,
) -> FhirResult:
    if not params:
        raise InvalidRequest("A conditional update needs search criteria in the URL")
    write.check_valid(resource, expected_type=res_type)
    matches = await find_matches(session, res_type, params)
    if len(matches) > 1:
        raise PreconditionFailed(
            f"The criteria match more than one {res_type}", code="multiple-matches"
        )
    body_id = resource.get("id")
    if matches:
        if body_id is not None and body_id != matches[0]:
            raise InvalidRequest(
                f"The body's id '{body_id}' is not the id of the matching resource",
                expression=f"{res_type}.id",
            )
        resource["id"] = matches[0]
    elif body_id is None:
        resource["id"] = new_id()
    version, created = await write.update(
        session,
        resource,
        res_type,
        resource["id"],
        if_match=write.parse_if_match(if_match),
        validated=True,
        # No match and no id: a create at the id just assigned, not one the client chose.
        chosen_id=bool(matches) or body_id is not None,
    )
    return FhirResult(status=201 if created else 200, version=version)
