"""delete and conditional delete (R4 http.html#delete, #3.1.0.7.1)."""

from __future__ import annotations

from healthmesh.fhir.errors import (
    InvalidRequest,
    Issue,
    NotFound,
    PreconditionFailed,
    operation_outcome,
)
from healthmesh.interactions import write
from healthmesh.interactions.conditional import find_matches
from healthmesh.interactions.context import FhirResult, check_id
from healthmesh.store.repository import Session, StoredVersion


async def delete(session: Session, res_type: str, id: str) -> FhirResult:
    check_id(id)
    deleted = await write.delete(session, res_type, id)
    if deleted is None:
        raise NotFound(f"{res_type}/{id} is not known")
    return _deleted(*deleted)


async def conditional_delete(
    session: Session, res_type: str, params: list[tuple[str, str]]
) -> FhirResult:
    """Single-match conditional delete: several matches answer 412, none is a quiet success."""
    if not params:
        raise InvalidRequest("A conditional delete needs search criteria in the URL")
    matches = await find_matches(session, res_type, params)
    if len(matches) > 1:
        raise PreconditionFailed(
            f"The criteria match more than one {res_type}; this server deletes one at a time",
            code="multiple-matches",
        )
    if not matches:
        outcome = operation_outcome(
            [
                Issue(
                    severity="information",
                    code="not-found",
                    diagnostics="No resource matched; nothing was deleted",
                )
            ]
        )
        return FhirResult(status=200, body=outcome)
    deleted = await write.delete(session, res_type, matches[0])
    if deleted is None:  # gone between the match and the delete: nothing to delete now
        raise NotFound(f"{res_type}/{matches[0]} is not known")
    return _deleted(*deleted)


def _deleted(version: StoredVersion, new: bool) -> FhirResult:
    """204; ``unchanged`` when it was deleted already (a no-op: no change for the audit to
    call a revocation, api/auditing.py)."""
    return FhirResult(status=204, version=version, unchanged=not new)
