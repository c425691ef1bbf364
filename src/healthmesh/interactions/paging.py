"""_count and the server's paging offset, checked."""

from __future__ import annotations

from collections.abc import Sequence

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.interactions.bundles import link
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


def offset_links(
    request: FhirRequest,
    path: str,
    *,
    count: int,
    offset: int,
    has_next: bool,
    fixed: Sequence[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """self/next/previous links of an offset-paged Bundle.

    The request's own parameters are repeated, less the paging ones; ``fixed`` adds
    parameters every page must share (history's upper time bound).
    """
    paging_names = {"_count", "__offset", *(name for name, _ in fixed)}
    kept = [(k, v) for k, v in request.params if k not in paging_names]
    common = [*kept, *fixed, ("_count", str(count))]
    links = [link("self", request.base, path, [*common, ("__offset", str(offset))])]
    if has_next:
        links.append(link("next", request.base, path, [*common, ("__offset", str(offset + count))]))
    if offset > 0:
        links.append(
            link(
                "previous", request.base, path, [*common, ("__offset", str(max(0, offset - count)))]
            )
        )
    return links
