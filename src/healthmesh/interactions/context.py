"""The request and result value objects every interaction speaks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from healthmesh.fhir.errors import InvalidRequest, NotFound
from healthmesh.fhir.ids import is_valid_id
from healthmesh.fhir.structure import is_resource_type
from healthmesh.store.access import Visibility
from healthmesh.store.repository import Session, StoredVersion

AuditHook = Callable[["Session", "FhirRequest", "list[FhirResult]"], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FhirRequest:
    """A FHIR request after HTTP parsing: method, path below the base, query, headers, body."""

    method: str
    path: tuple[str, ...]
    params: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON (a resource, a Bundle, or a JSON Patch array)
    base: str = ""  # the service base URL, e.g. http://localhost:8080/fhir
    # What the caller's token lets it touch (store/access.py); None: unrestricted (--open).
    visibility: Visibility | None = None
    secured: bool = False  # the node requires tokens (not --open): metadata says so
    # Called inside each write transaction of a batch/transaction Bundle, before commit, with
    # the entry (or the whole Bundle request) and its results: the audit (api/auditing.py).
    audit_hook: AuditHook | None = None

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    @property
    def query_string(self) -> str:
        from urllib.parse import urlencode

        return urlencode(list(self.params))


@dataclass(slots=True, kw_only=True)
class FhirResult:
    """What an interaction answers: a status and a stored version, a body, or both."""

    status: int
    version: StoredVersion | None = None  # read, vread, create, update, patch, delete
    body: dict[str, Any] | None = None  # Bundles, OperationOutcomes, CapabilityStatement
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # An informational OperationOutcome for Prefer: return=OperationOutcome.
    outcome: dict[str, Any] | None = None
    unchanged: bool = False  # an update whose content equalled the current version's


def check_type(res_type: str) -> str:
    if not is_resource_type(res_type):
        raise NotFound(f"Unknown resource type '{res_type}'", code="not-supported")
    return res_type


def check_id(id: str) -> str:
    if not is_valid_id(id):
        raise InvalidRequest(
            f"'{id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", expression="id"
        )
    return id


def check_version(vid: str) -> int:
    if not vid.isdigit() or len(vid) > 9:
        raise NotFound(f"No version '{vid}': version ids here are positive integers")
    return int(vid)
