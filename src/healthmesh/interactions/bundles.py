"""Building searchset and history Bundles from stored versions (R4 bundle.html).

Stored content is spliced in as pre-serialised JSON (``orjson.Fragment``) unless a
``_summary``/``_elements`` view asks for part of it: no parse and re-serialise per entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC
from functools import lru_cache
from typing import Any
from urllib.parse import quote_plus

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


# What quote_plus leaves as it is; every other character is quoted on its own (UTF-8, %XX).
_RESERVED = re.compile(r"[^A-Za-z0-9_.~-]")


@lru_cache(maxsize=4096)
def _quoted(character: str) -> str:
    return quote_plus(character)


def _quote_match(match: re.Match[str]) -> str:
    return _quoted(match.group())


def query_string(params: Sequence[tuple[str, str]]) -> str:
    """``urllib.parse.urlencode(params)``, quoting only the characters that need it: the
    standard ``quote_plus`` goes through every byte in Python, a tenth of the Python of a
    one-result search's paging links (callgrind)."""
    return "&".join(
        f"{_RESERVED.sub(_quote_match, k)}={_RESERVED.sub(_quote_match, v)}" for k, v in params
    )


def link(relation: str, base: str, path: str, params: Sequence[tuple[str, str]]) -> dict[str, str]:
    query = query_string(params)
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
