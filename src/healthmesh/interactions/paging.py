"""_count and the server's paging offset, checked."""

from __future__ import annotations

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.interactions.context import FhirRequest

MAX_COUNT = 1000


def _non_negative(request: FhirRequest, name: str) -> int | None:
    raw = request.param(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest(f"{name} must be a non-negative integer, not '{raw}'", expression=name)
    return int(raw)


def page_params(request: FhirRequest, *, default: int = 20) -> tuple[int, int]:
    """(count, offset): ``_count`` capped at MAX_COUNT (R4 lets the server choose)."""
    count = _non_negative(request, "_count")
    offset = _non_negative(request, "__offset") or 0
    return min(default if count is None else count, MAX_COUNT), offset
