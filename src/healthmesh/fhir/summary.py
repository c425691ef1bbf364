"""``_summary`` and ``_elements``: returning part of a resource (R4 search.html#summary).

Filtering is by top-level element, as the base definitions' ``isSummary`` flags say; a
subsetted resource carries the ``SUBSETTED`` tag (R4 v3-ObservationValue) so nobody mistakes it
for the whole and writes it back.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from healthmesh.fhir.definitions import top_level_elements
from healthmesh.fhir.errors import InvalidRequest

SUMMARY_MODES = ("true", "text", "data", "count", "false")
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


def check_summary(value: str | None) -> str | None:
    if value is not None and value not in SUMMARY_MODES:
        raise InvalidRequest(
            f"_summary must be one of {', '.join(SUMMARY_MODES)}, not '{value}'",
            expression="_summary",
        )
    return None if value == "false" else value


def _element_name(key: str, names: Collection[str]) -> str:
    """The element a JSON key belongs to: ``_birthDate`` -> birthDate, ``valueQuantity`` -> value."""
    key = key.removeprefix("_")
    if key in names:
        return key
    for i in range(len(key) - 1, 0, -1):
        if key[i].isupper() and key[:i] in names:
            return key[:i]
    return key


def _keep(resource: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    kept = {k: v for k, v in resource.items() if k in _ALWAYS or _element_name(k, names) in names}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return {"resourceType": resource["resourceType"], **kept}


def apply_summary(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    tops = top_level_elements().get(resource.get("resourceType", ""))
    if tops is None:
        return resource
    if mode == "true":
        return _keep(resource, tops.summary)
    if mode == "text":
        return _keep(resource, tops.required | {"text"})
    if mode == "data":
        data = {k: v for k, v in resource.items() if k != "text"}
        return _keep(data, set(data))
    return resource


def apply_elements(resource: dict[str, Any], elements: str) -> dict[str, Any]:
    """``_elements=a,b``: those top-level elements plus the mandatory ones."""
    names = {e.strip().split(".")[-1] for e in elements.split(",") if e.strip()}
    tops = top_level_elements().get(resource.get("resourceType", ""))
    required = tops.required if tops else frozenset()
    return _keep(resource, names | required)
