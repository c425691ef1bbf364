"""Building searchset and history Bundles from stored versions (R4 bundle.html).

Stored content is spliced in as pre-serialised JSON (``orjson.Fragment``) unless a
``_summary``/``_elements`` view asks for part of it: no parse and re-serialise per entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import orjson

from healthmesh.fhir.summary import apply_elements, apply_summary
from healthmesh.store.repository import StoredVersion
from healthmesh.store.rows import format_instant


def resource_view(content: str, *, summary: str | None, elements: str | None) -> Any:
    if summary is None and elements is None:
        return orjson.Fragment(content)
    resource: dict[str, Any] = orjson.loads(content)
    if summary is not None:
        return apply_summary(resource, summary)
    assert elements is not None
    return apply_elements(resource, elements)


def link(relation: str, base: str, path: str, params: Sequence[tuple[str, str]]) -> dict[str, str]:
    query = urlencode(list(params))
    target = f"{base}/{path}" if path else base
    return {"relation": relation, "url": target + (f"?{query}" if query else "")}


def etag(version: StoredVersion) -> str:
    return f'W/"{version.version_id}"'


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(version: StoredVersion) -> str:
    """RFC 9110 IMF-fixdate, e.g. ``Mon, 23 Nov 2026 10:00:00 GMT`` (on every read: kept cheap)."""
    t = version.last_updated.astimezone(UTC)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


def history_entry(base: str, v: StoredVersion) -> dict[str, Any]:
    """A history entry: the version, and the request that made it (R4 http.html#history)."""
    url = f"{v.res_type}/{v.id}"
    if v.deleted:
        method, status = "DELETE", "204"
    elif v.version_id == 1:
        method, status, url = "POST", "201", v.res_type
    else:
        method, status = "PUT", "200"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{v.res_type}/{v.id}"}
    if v.content is not None:
        entry["resource"] = orjson.Fragment(v.content)
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {
        "status": status,
        "etag": etag(v),
        "lastModified": format_instant(v.last_updated),
    }
    return entry
