"""read and vread (R4 http.html#read, #vread)."""

from __future__ import annotations

from healthmesh.fhir.errors import Gone, NotFound
from healthmesh.interactions.context import FhirResult, check_id, check_version
from healthmesh.store.repository import Session, StoredVersion


def _found(version: StoredVersion | None, what: str) -> FhirResult:
    if version is None:
        raise NotFound(f"{what} is not known")
    if version.deleted:
        raise Gone(f"{what} was deleted (version {version.version_id})")
    return FhirResult(status=200, version=version)


async def read(session: Session, res_type: str, id: str) -> FhirResult:
    check_id(id)
    return _found(await session.readable(res_type, id), f"{res_type}/{id}")


async def vread(session: Session, res_type: str, id: str, vid: str) -> FhirResult:
    check_id(id)
    version = await session.readable_version(res_type, id, check_version(vid))
    return _found(version, f"{res_type}/{id}/_history/{vid}")
