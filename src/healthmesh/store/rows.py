"""A resource made ready for storage: its meta stamped, its JSON serialised and hashed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import EllipsisType
from typing import Any

import orjson

from healthmesh.fhir.compartment import patient_key
from healthmesh.fhir.consent import ConsentError, ConsentRule, consent_rules
from healthmesh.fhir.errors import InvalidResource
from healthmesh.fhir.search.extract import IndexRows, extract
from healthmesh.fhir.security_labels import apply_security_labels


def format_instant(moment: datetime) -> str:
    """An R4 ``instant`` with millisecond precision in UTC (datatypes.html#instant)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> datetime:
    # Millisecond precision: what meta.lastUpdated shows must equal what _lastUpdated compares.
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def content_hash(resource: dict[str, Any]) -> bytes:
    """A hash of the content that ignores meta.versionId and meta.lastUpdated.

    Two writes with the same hash are the same content: the second makes no new version. The
    resource is security-labelled first (in place; fhir/security_labels.py), so the hash is of
    what will be stored, whichever path computes it.
    """
    apply_security_labels(resource)
    return _digest(resource)


def _digest(resource: dict[str, Any]) -> bytes:
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        trimmed = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        body = dict(resource)
        if trimmed:
            body["meta"] = trimmed
        else:
            del body["meta"]
        resource = body
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedVersion:
    res_type: str
    id: str
    version_id: int
    last_updated: datetime
    patient_id: str | None
    content_hash: bytes
    content: str
    index: IndexRows
    # A patient-privacy Consent's provisions, flattened (fhir/consent.py); () otherwise.
    consent: tuple[ConsentRule, ...] = ()


def prepare(
    resource: dict[str, Any],
    *,
    version_id: int,
    last_updated: datetime,
    digest: bytes | None = None,
    index_with: Callable[[Mapping[str, Any]], IndexRows | None] | None = None,
    index: IndexRows | None = None,
    patient_id: str | EllipsisType | None = ...,
) -> PreparedVersion:
    """Label, stamp meta onto ``resource`` (in place) and serialise it for storage.

    ``index_with``: a faster indexer for this kind of resource, giving the rows ``extract``
    would, or None to leave it to ``extract`` (the audit trail's, fhir/search/audit_index.py).
    ``index``: its rows, made already (the audit trail's, before its dict is reordered).
    ``patient_id``: the compartment key, when the caller decides it (the audit trail: the
    event's patient entity); by default, fhir/compartment.py's.
    """
    apply_security_labels(resource)
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(last_updated)
    # Keep resourceType, id, meta first: the order people expect when reading the JSON.
    ordered: dict[str, Any] = {
        "resourceType": resource["resourceType"],
        "id": resource["id"],
        "meta": meta,
    }
    ordered.update((k, v) for k, v in resource.items() if k not in ordered)
    resource.clear()
    resource.update(ordered)
    if index is None and index_with is not None:
        index = index_with(resource)
    if index is None:
        index = extract(resource)
    rules: tuple[ConsentRule, ...] = ()
    if resource["resourceType"] == "Consent":
        try:
            rules = tuple(consent_rules(resource))
        except ConsentError as refused:
            raise InvalidResource(refused.issues) from None
    return PreparedVersion(
        res_type=resource["resourceType"],
        id=resource["id"],
        version_id=version_id,
        last_updated=last_updated,
        patient_id=(
            patient_key(resource, index.reference) if patient_id is Ellipsis else patient_id
        ),
        # Labelled above already: hash without labelling again.
        content_hash=digest if digest is not None else _digest(resource),
        content=orjson.dumps(resource).decode(),
        index=index,
        consent=rules,
    )
