"""The write core shared by create, update, patch, delete and their conditional forms.

Versions are integers counting up from 1. A write whose content equals the current version's
(same hash, ignoring meta.versionId/lastUpdated) makes no new version: loading the same data
twice leaves the same data.
"""

from __future__ import annotations

from typing import Any

from healthmesh.fhir.consent import ConsentError, consent_rules
from healthmesh.fhir.errors import (
    Forbidden,
    InvalidRequest,
    InvalidResource,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from healthmesh.fhir.ids import new_id
from healthmesh.fhir.search.custom import definition_from_resource, is_active
from healthmesh.fhir.validation import check_resource
from healthmesh.store.repository import Session, StoredVersion, refusal
from healthmesh.store.rows import content_hash, now, prepare


def check_valid(resource: Any, *, expected_type: str | None = None) -> dict[str, Any]:
    """Structure (the R4 definitions) and this server's business rules for a resource."""
    checked = check_resource(resource, expected_type=expected_type)
    if checked.get("resourceType") == "SearchParameter" and is_active(checked):
        definition_from_resource(checked)  # refuse a parameter that could never match
    if checked.get("resourceType") == "Consent":
        # A Consent the node cannot enforce is refused for what it says, before anything is
        # looked up for the write (store/rows.prepare asks again as it stores it).
        try:
            consent_rules(checked)
        except ConsentError as refused:
            raise InvalidResource(refused.issues) from None
    return checked


def _stored(res_type: str, id: str, p: Any) -> StoredVersion:
    """The version just written; its owner is the compartment key it was written with."""
    return StoredVersion(
        res_type,
        id,
        p.version_id,
        p.last_updated,
        False,
        p.content,
        p.content_hash,
        owner=p.patient_id,
        owner_read=True,
    )


async def create(
    session: Session, resource: dict[str, Any], res_type: str, *, id: str | None = None
) -> StoredVersion:
    """POST: a new resource with a server-assigned id (any id in the body is ignored).

    ``id`` is the id a transaction assigned beforehand, so other entries could refer to it.
    """
    check_valid(resource, expected_type=res_type)
    resource["id"] = id or new_id()
    prepared = prepare(resource, version_id=1, last_updated=now())
    await session.insert(prepared)
    return _stored(res_type, prepared.id, prepared)


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: W/"3"`` (or ``"3"``) -> 3 (R4 http.html#concurrency)."""
    if value is None:
        return None
    tag = value.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not tag.isdigit():
        raise InvalidRequest(
            f"If-Match '{value}' is not a version ETag like W/\"1\"", expression="If-Match"
        )
    return int(tag)


async def update(
    session: Session,
    resource: dict[str, Any],
    res_type: str,
    id: str,
    *,
    if_match: int | None = None,
    validated: bool = False,
    chosen_id: bool = True,
) -> tuple[StoredVersion, bool]:
    """PUT: a new version of ``id``, or the resource created with that id. Returns (version,
    created). ``chosen_id``: the id is the client's (a PUT's URL), not one the server just
    assigned (a conditional update that matched nothing)."""
    if not validated:
        check_valid(resource, expected_type=res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise InvalidRequest(
            "The resource has no id; an update must carry the id of its URL",
            expression=f"{res_type}.id",
        )
    if body_id != id:
        raise InvalidRequest(
            f"The resource id '{body_id}' does not match the URL's id '{id}'",
            expression=f"{res_type}.id",
        )
    session.require_covers("u", res_type)
    current = await _current(session, res_type, id)
    live = current is not None and not current.deleted
    unseen = False
    if live and not await session.may("u", res_type, id):
        # Not the caller's to change: refused before its version or content can show through
        # (If-Match, an unchanged write). One it can read is refused as such; one it cannot
        # is, to this caller, an id with no resource, and answered as a free one is.
        if await session.may("r", res_type, id):
            raise Forbidden(refusal("u", res_type, id))
        unseen = True
    if (unseen or not live) and chosen_id and not session.chooses_ids(res_type):
        session.require_covers("c", res_type)  # a token that may create none: that, first
        raise MethodNotAllowed(_no_chosen_ids(res_type, id))
    if unseen:
        # Only a caller that may choose ids gets here, one that may change every row of the
        # type: never, unless a rule this check does not know of refused the change.
        raise Forbidden(refusal("c", res_type, id))
    if current is None:
        # Create-on-update: two concurrent PUTs to a new id must not both insert.
        await session.lock(f"{res_type}/{id}")
        current = await session.current(res_type, id, for_update=True)
    if if_match is not None and (
        current is None or current.deleted or current.version_id != if_match
    ):
        have = "none" if current is None or current.deleted else f'W/"{current.version_id}"'
        raise PreconditionFailed(
            f'If-Match W/"{if_match}" does not match the current version ({have}) of {res_type}/{id}'
        )
    digest = content_hash(resource)
    if current is not None and not current.deleted and current.content_hash == digest:
        return current, False  # same content: no new version
    version_id = 1 if current is None else current.version_id + 1
    prepared = prepare(resource, version_id=version_id, last_updated=now(), digest=digest)
    if current is None:
        await session.insert(prepared)
    else:
        await session.replace(prepared)
    return _stored(res_type, id, prepared), current is None or current.deleted


def _no_chosen_ids(res_type: str, id: str) -> str:
    # R4 http.html#update: 405 when "the resource did not exist prior to the update, and
    # the server does not allow client defined ids". The same words whether the id is free,
    # deleted or someone else's: all three are, to this caller, an id with no resource.
    return (
        f"There is no {res_type}/{id} this token may change, and it may not create one at an"
        f" id of its choosing (update-as-create): create it with POST {res_type}, which"
        " assigns the id"
    )


async def _current(session: Session, res_type: str, id: str) -> StoredVersion | None:
    return await session.current(res_type, id, for_update=True)


async def _writable(
    session: Session, permission: str, res_type: str, id: str
) -> StoredVersion | None:
    """The current version (locked), or None as if there were none when the caller may not
    touch it so and may not read it either: a resource outside the caller's reach answers
    exactly as an unknown id (404), never revealing that it exists. 403 for one it can see
    but not change so, and for scopes that allow no such change of the type at all (asked
    before any row is read)."""
    session.require_covers(permission, res_type)
    current = await _current(session, res_type, id)
    if current is None or current.deleted or await session.may(permission, res_type, id):
        return current
    if await session.may("r", res_type, id):
        raise Forbidden(refusal(permission, res_type, id))
    return None


async def delete(session: Session, res_type: str, id: str) -> tuple[StoredVersion, bool] | None:
    """DELETE: a tombstone version, and whether it is new (deleting a deleted resource is a
    no-op: its tombstone, False). None if it never existed, or is not the caller's to delete."""
    current = await _writable(session, "d", res_type, id)
    if current is None:
        return None
    if current.deleted:
        return current, False
    at = now()
    await session.tombstone(res_type, id, current.version_id + 1, at)
    # Whose it was (the tombstone keeps no compartment key): the delete's AuditEvent belongs
    # in that patient's trail, and a deleted Consent is their revocation (api/auditing.py).
    tombstone = StoredVersion(
        res_type,
        id,
        current.version_id + 1,
        at,
        True,
        None,
        owner=current.owner,
        owner_read=current.owner_read,
    )
    return tombstone, True


async def require_current(session: Session, res_type: str, id: str) -> StoredVersion:
    """The current version for a change (patch): 404 if unknown, deleted, or not the
    caller's to change."""
    current = await _writable(session, "u", res_type, id)
    if current is None or current.deleted or current.content is None:
        raise NotFound(f"{res_type}/{id} is not known")
    return current
