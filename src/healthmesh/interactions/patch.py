"""patch with JSON Patch (RFC 6902; R4 http.html#patch)."""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson

from healthmesh.fhir.errors import InvalidRequest, NotFound, PreconditionFailed
from healthmesh.interactions import write
from healthmesh.interactions.conditional import find_matches
from healthmesh.interactions.context import FhirResult, check_id
from healthmesh.store.repository import Session


def _apply(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    if not isinstance(operations, list):
        raise InvalidRequest("A JSON Patch body is an array of operations (RFC 6902)")
    try:
        patched = jsonpatch.apply_patch(document, operations)
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
    ) as exc:
        raise InvalidRequest(
            f"The JSON Patch cannot be applied: {exc}", code="processing"
        ) from None
    if not isinstance(patched, dict):
        raise InvalidRequest("The JSON Patch replaced the whole resource with a non-object")
    return patched


async def patch(
    session: Session, res_type: str, id: str, operations: Any, *, if_match: str | None = None
) -> FhirResult:
    check_id(id)
    if session.visibility is not None and await session.readable(res_type, id) is None:
        # A patch shows what it patches (the answer, a "test" operation's yes or no): on a
        # resource the caller may not read — its scopes, or the patient's Consents — it
        # answers exactly as for one that does not exist.
        raise NotFound(f"{res_type}/{id} is not known")
    current = await write.require_current(session, res_type, id)
    expected = write.parse_if_match(if_match)
    if expected is not None and expected != current.version_id:
        raise PreconditionFailed(
            f'If-Match W/"{expected}" does not match the current version W/"{current.version_id}"'
        )
    assert current.content is not None
    patched = _apply(orjson.loads(current.content), operations)
    write.check_valid(patched, expected_type=res_type)
    if patched.get("id") != id:
        raise InvalidRequest(
            "A patch may not change the resource's id", expression=f"{res_type}.id"
        )
    version, _ = await write.update(session, patched, res_type, id, validated=True)
    return FhirResult(status=200, version=version)


async def conditional_patch(
    session: Session,
    res_type: str,
    params: list[tuple[str, str]],
    operations: Any,
    *,
    if_match: str | None,
) -> FhirResult:
    if not params:
        raise InvalidRequest("A conditional patch needs search criteria in the URL")
    matches = await find_matches(session, res_type, params)
    if len(matches) != 1:
        raise PreconditionFailed(
            f"A conditional patch needs exactly one match; the criteria match {len(matches) or 'no'}"
            f"{'+' if len(matches) > 1 else ''} {res_type}",
            code="multiple-matches" if matches else "not-found",
        )
    return await patch(session, res_type, matches[0], operations, if_match=if_match)
