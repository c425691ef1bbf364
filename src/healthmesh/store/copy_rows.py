"""A prepared version as the bytes ``COPY … FROM STDIN`` reads: its resource row and index rows.

PostgreSQL's COPY text format (sql-copy.html, "Text Format"): one line per row, columns
separated by a tab, ``\\N`` for NULL, and a backslash, tab, newline or carriage return inside a
value written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``. Making these bytes is the CPU part of a
COPY; the loader's worker processes do it (load/prepare.py), so the process that writes only
joins bytes and sends them, and what crosses the process boundary is a few byte strings per
resource instead of a Python tuple per index row. Transactions use the same encoding
(``Session.insert_many``), so there is one writer of COPY data.

Column orders are the store's: ``RESOURCE_COLUMNS`` and, per index table, ``res_type, res_id,
param``, the value columns of ``INDEX_COLUMNS``, ``patient_id, elem``. Bytes are UTF-8: the
repository's connections set ``client_encoding`` to UTF8.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from healthmesh.fhir.consent import ConsentRule
from healthmesh.fhir.search.extract import IndexRows
from healthmesh.store.rows import PreparedVersion

RESOURCE_COLUMNS = (
    "res_type",
    "id",
    "version_id",
    "last_updated",
    "deleted",
    "patient_id",
    "content_hash",
    "content",
)
# Index kind (an IndexRows attribute) -> value columns after (res_type, res_id, param); the
# order is the order of EncodedVersion.indexes.
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("system", "code", "display"),
    "string": ("norm", "exact"),
    "date": ("low", "high"),
    "number": ("value",),
    "quantity": ("value", "system", "code", "unit", "canonical_value", "canonical_code"),
    "uri": ("uri",),
    "reference": ("target_type", "target_id", "target_url"),
}
INDEX_KINDS = tuple(INDEX_COLUMNS)

NULL = "\\N"
_SPECIAL = re.compile(r"[\\\t\n\r]").search
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class EncodedVersion(NamedTuple):
    """One version ready to COPY: what the writer needs to decide, and the lines to send."""

    res_type: str
    id: str
    patient_id: str | None
    content_hash: bytes
    resource: bytes  # the ``resource`` line; its last column is the JSON (``content_of``)
    indexes: tuple[bytes, ...]  # per INDEX_KINDS, that index table's lines (b"" for none)
    consent: tuple[ConsentRule, ...] = ()  # a patient-privacy Consent's provisions


def text(value: str) -> str:
    """A text value as a COPY field."""
    # Two C-level scans; printable excludes tab, newline and carriage return.
    if "\\" not in value and value.isprintable():
        return value
    return value.translate(_ESCAPES) if _SPECIAL(value) else value


def _opt(value: str | None) -> str:
    return NULL if value is None else text(value)


@lru_cache(maxsize=4096)
def _stamp(value: datetime) -> str:
    # ISO 8601 with its offset: PostgreSQL's timestamptz input reads it as the same instant.
    # Cached: a unit's versions share meta.lastUpdated, a record its timestamps.
    return value.isoformat()


def _num(value: Decimal | None) -> str:
    # str(Decimal) may use exponent notation ("1E+2"), which numeric input accepts.
    return NULL if value is None else str(value)


def _plain(probe: str) -> bool:
    """No character in ``probe`` needs escaping: rows whose texts joined pass this are
    formatted without a check per column (most rows: the common case, made cheap)."""
    return "\\" not in probe and probe.isprintable()


def _n(value: str | None) -> str:
    return NULL if value is None else value


def _token(row: tuple[Any, ...]) -> str:
    p, s, c, d = row
    if _plain(p + (s or "") + (c or "") + (d or "")):
        return f"{p}\t{_n(s)}\t{_n(c)}\t{_n(d)}"
    return f"{text(p)}\t{_opt(s)}\t{_opt(c)}\t{_opt(d)}"


def _string(row: tuple[Any, ...]) -> str:
    return f"{text(row[0])}\t{text(row[1])}\t{text(row[2])}"


def _date(row: tuple[Any, ...]) -> str:
    return f"{text(row[0])}\t{_stamp(row[1])}\t{_stamp(row[2])}"


def _number(row: tuple[Any, ...]) -> str:
    return f"{text(row[0])}\t{_num(row[1])}"


def _quantity(row: tuple[Any, ...]) -> str:
    p, v, s, c, u, cv, cc = row
    if _plain(p + (s or "") + (c or "") + (u or "") + (cc or "")):
        return f"{p}\t{_num(v)}\t{_n(s)}\t{_n(c)}\t{_n(u)}\t{_num(cv)}\t{_n(cc)}"
    return f"{text(p)}\t{_num(v)}\t{_opt(s)}\t{_opt(c)}\t{_opt(u)}\t{_num(cv)}\t{_opt(cc)}"


def _uri(row: tuple[Any, ...]) -> str:
    return f"{text(row[0])}\t{text(row[1])}"


def _reference(row: tuple[Any, ...]) -> str:
    p, t, i, u = row
    if _plain(p + (t or "") + (i or "") + (u or "")):
        return f"{p}\t{_n(t)}\t{_n(i)}\t{_n(u)}"
    return f"{text(p)}\t{_opt(t)}\t{_opt(i)}\t{_opt(u)}"


_FIELDS: dict[str, Callable[[tuple[Any, ...]], str]] = {
    "token": _token,
    "string": _string,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
    "reference": _reference,
}


def index_lines(
    res_type: str, res_id: str, patient_id: str | None, index: IndexRows
) -> tuple[bytes, ...]:
    """Each index table's COPY lines for one resource's rows, in INDEX_KINDS order."""
    head = f"{text(res_type)}\t{text(res_id)}\t"
    tail = f"\t{_opt(patient_id)}\t"
    plain = tail + NULL + "\n"
    composite: dict[str, list[str]] = {}
    for kind, row, elem in index.composite:
        composite.setdefault(kind, []).append(f"{head}{_FIELDS[kind](row)}{tail}{elem}\n")
    out = []
    for kind in INDEX_KINDS:
        rows: list[Any] = getattr(index, kind)
        extra = composite.get(kind)
        if not rows and not extra:
            out.append(b"")
            continue
        fields = _FIELDS[kind]
        lines = [f"{head}{fields(row)}{plain}" for row in rows]
        if extra:
            lines += extra
        out.append("".join(lines).encode())
    return tuple(out)


def encode(p: PreparedVersion) -> EncodedVersion:
    """The version's COPY lines (a live version: ``deleted`` false)."""
    content = p.content.encode()
    # orjson writes every control character as an escape, so the JSON holds no tab, newline
    # or carriage return; its backslashes (escapes) are the one thing COPY needs doubled.
    line = (
        (
            f"{text(p.res_type)}\t{text(p.id)}\t{p.version_id}\t{_stamp(p.last_updated)}\tf"
            f"\t{_opt(p.patient_id)}\t\\\\x{p.content_hash.hex()}\t"
        ).encode()
        + content.replace(b"\\", b"\\\\")
        + b"\n"
    )
    return EncodedVersion(
        p.res_type,
        p.id,
        p.patient_id,
        p.content_hash,
        line,
        index_lines(p.res_type, p.id, p.patient_id, p.index),
        p.consent,
    )


def _content(line: bytes) -> bytes:
    """The stored JSON of a ``resource`` line: its last column, unescaped."""
    # The JSON holds no tab (see encode), so the last tab ends the columns before it.
    return line[line.rindex(b"\t") + 1 : -1].replace(b"\\\\", b"\\")


def content_of(version: EncodedVersion) -> bytes:
    """The stored JSON of an encoded version."""
    return _content(version.resource)


ConsentEntry = tuple[int, str, str | None, tuple[ConsentRule, ...]]  # position, id, patient


@dataclass(slots=True)
class EncodedBatch:
    """Many versions' COPY data joined per table, with where each version's lines end: what
    a loader worker hands back for a unit (few objects to pickle), and what the writer sends
    whole when every version is new, or in part (``pick``) when some exist already."""

    keys: list[tuple[str, str]]  # (res_type, id) per version
    hashes: list[bytes]
    resource: bytes
    indexes: tuple[bytes, ...]  # per INDEX_KINDS
    ends: list[tuple[int, ...]]  # per version: end in resource, then in each of indexes
    consent: list[ConsentEntry]  # the versions that are patient-privacy Consents

    @classmethod
    def of(cls, versions: Sequence[EncodedVersion]) -> EncodedBatch:
        ends: list[tuple[int, ...]] = []
        position = [0] * (1 + len(INDEX_KINDS))
        for v in versions:
            position[0] += len(v.resource)
            for k, lines in enumerate(v.indexes, start=1):
                position[k] += len(lines)
            ends.append(tuple(position))
        return cls(
            keys=[(v.res_type, v.id) for v in versions],
            hashes=[v.content_hash for v in versions],
            resource=b"".join(v.resource for v in versions),
            indexes=tuple(
                b"".join(v.indexes[k] for v in versions) for k in range(len(INDEX_KINDS))
            ),
            ends=ends,
            consent=[
                (n, v.id, v.patient_id, v.consent) for n, v in enumerate(versions) if v.consent
            ],
        )

    def __len__(self) -> int:
        return len(self.keys)

    def _span(self, n: int, column: int) -> slice:
        return slice(self.ends[n - 1][column] if n else 0, self.ends[n][column])

    def content(self, n: int) -> bytes:
        """The stored JSON of version ``n``."""
        return _content(self.resource[self._span(n, 0)])

    def pick(self, positions: Sequence[int]) -> EncodedBatch:
        """The versions at ``positions`` (ascending), as a batch of their own."""
        if len(positions) == len(self.keys):
            return self
        chosen = set(positions)
        versions = [
            EncodedVersion(
                *self.keys[n],
                None,
                self.hashes[n],
                self.resource[self._span(n, 0)],
                tuple(self.indexes[k][self._span(n, k + 1)] for k in range(len(INDEX_KINDS))),
            )
            for n in positions
        ]
        batch = EncodedBatch.of(versions)
        batch.consent = [
            (positions.index(n), id, patient, rules)
            for n, id, patient, rules in self.consent
            if n in chosen
        ]
        return batch
