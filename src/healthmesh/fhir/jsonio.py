"""JSON in and out, with orjson. One place decides how FHIR JSON is parsed and written."""

from __future__ import annotations

from typing import Any

import orjson

from healthmesh.fhir.errors import InvalidRequest


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads_resource(body: bytes | str, *, where: str = "body") -> dict[str, Any]:
    """Parse a request body that must be one JSON object; malformed JSON is a 400 naming where."""
    raw = body.encode() if isinstance(body, str) else body
    # PostgreSQL text cannot hold U+0000, and FHIR strings have no use for it.
    if b"\\u0000" in raw:
        raise InvalidRequest(f"The {where} contains a NUL character (\\u0000)", code="structure")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The {where} is not valid JSON: {exc}", code="structure") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The {where} must be a JSON object (a FHIR resource)", code="structure"
        )
    return value
