"""The opaque paging cursor of a ``_sort``-ed search: where a page ends, by value.

A cursor is base64url (unpadded) of the JSON ``{"s": <_sort>, "k": [<sort key values>],
"t": <res_type>, "i": <id>}``: the sort key values of a page's last (or first) row as the
database prints them (text, or null when the row has none), then its (type, id), the
tiebreak. The next page is the rows strictly after it in the search's order
(store/search/keyset.py), so writes between pages shift nothing: no resource is shown
twice or skipped unless it was itself written.

A cursor comes back from the caller, so nothing in it is trusted: each value must parse
as its key's type, or the request is a 400 naming the parameter (never a database error).
It cannot widen what the caller sees: it only adds a condition to the search's own WHERE,
scopes and Consent conditions included, and it positions by the sort values the caller
could already order by.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime

from healthmesh.fhir.errors import InvalidRequest
from healthmesh.store.search.keyset import SortType

MAX_CURSOR_CHARS = 8192
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# numeric's text output: never an exponent, never NaN (index values are finite).
_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# timestamp (UTC, DateStyle ISO) text output, or the infinities an open Period stores.
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?)( BC)?"
)
_INFINITE = frozenset({"infinity", "-infinity"})


@dataclass(frozen=True, slots=True)
class SortCursor:
    sort: str
    values: tuple[str | None, ...]
    res_type: str
    id: str


def encode_cursor(cursor: SortCursor) -> str:
    body = {"s": cursor.sort, "k": list(cursor.values), "t": cursor.res_type, "i": cursor.id}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _text_ok(value: object) -> bool:
    """A string PostgreSQL can take as text: UTF-8 encodable (no lone surrogate), no NUL."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _value_ok(value: str, kind: SortType) -> bool:
    if kind == "text":
        return True
    if kind == "numeric":
        return _NUMERIC.fullmatch(value) is not None
    if value in _INFINITE:
        return True
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return False
    try:
        datetime.fromisoformat(match.group(1))  # month 13, February 30th: not a timestamp
    except ValueError:
        return False
    return True


def decode_cursor(raw: str, name: str, sort: str, kinds: list[SortType]) -> SortCursor:
    """The cursor in parameter ``name``, checked against the request's ``_sort`` and the
    types of its keys; any other text is a 400 naming ``name``."""

    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(
            f"{name} is not a paging cursor of this search ({why})", expression=name
        )

    if len(raw) > MAX_CURSOR_CHARS or _BASE64URL.fullmatch(raw) is None:
        raise bad("not base64url")
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        body = json.loads(text)
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        raise bad("not JSON") from None
    if not isinstance(body, dict) or set(body) != {"s", "k", "t", "i"}:
        raise bad("not a cursor object")
    values, res_type, id = body["k"], body["t"], body["i"]
    if body["s"] != sort:
        raise bad("made for another _sort")
    if not isinstance(values, list) or len(values) != len(kinds):
        raise bad("wrong number of sort values")
    for value, kind in zip(values, kinds, strict=True):
        if value is not None and not (_text_ok(value) and _value_ok(value, kind)):
            raise bad(f"a sort value is not a {kind}")
    for part in (res_type, id):
        if not _text_ok(part) or not part or len(part) > 256:
            raise bad("no resource type and id")
    return SortCursor(sort, tuple(values), res_type, id)
