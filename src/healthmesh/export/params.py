"""Kick-off parameters of $export (Bulk Data IG v2.0.0, export.html#query-parameters).

From the query string of a GET, or the Parameters resource of a POST, to an
:class:`ExportRequest`. What this server does not support is refused with a 400 naming the
parameter, unless the client sent ``Prefer: handling=lenient`` (export.html#query-parameters:
"the server SHALL return an error … unless handling=lenient"); then it is left out and said
so in the manifest's error file (a warning OperationOutcome).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from healthmesh.fhir.dates import parse_instant
from healthmesh.fhir.errors import InvalidRequest, NotSupported
from healthmesh.fhir.ids import is_valid_id
from healthmesh.fhir.search.query import RESULT_PARAMETERS, parse_query
from healthmesh.fhir.structure import is_resource_type

# export.html#query-parameters: "SHALL accept the full content type of application/fhir+ndjson
# as well as the abbreviated representations application/ndjson and ndjson".
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
LEVELS = ("system", "patient", "group")
# A _typeFilter value is a query of one type; several in one value are comma-separated, but
# commas also separate search values (code=a,b): split only where a new "Type?" starts.
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
_POST_VALUE_KEYS = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRequest:
    """What to export. ``types`` empty: every type the level covers. ``filters``: per type,
    the queries of which a resource must match at least one (processing model: types without
    a filter are exported whole). ``warnings``: what lenient handling left out."""

    level: str  # system | patient | group
    group: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    filters: dict[str, tuple[tuple[tuple[str, str], ...], ...]] = field(default_factory=dict)
    patients: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "level": self.level,
                "group": self.group,
                "types": list(self.types),
                "since": self.since.isoformat() if self.since else None,
                "filters": {t: [list(map(list, q)) for q in qs] for t, qs in self.filters.items()},
                "patients": list(self.patients),
                "warnings": list(self.warnings),
            }
        ).decode()

    @staticmethod
    def from_json(text: str) -> ExportRequest:
        data = orjson.loads(text)
        return ExportRequest(
            level=data["level"],
            group=data["group"],
            types=tuple(data["types"]),
            since=datetime.fromisoformat(data["since"]) if data["since"] else None,
            filters={
                t: tuple(tuple((n, v) for n, v in q) for q in qs)
                for t, qs in data["filters"].items()
            },
            patients=tuple(data["patients"]),
            warnings=tuple(data["warnings"]),
        )


def pairs_of_parameters(body: Any) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters resource as (name, value) pairs, as a GET would send them.
    ``patient`` carries a valueReference (export.html#query-parameters)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("A POST $export takes a Parameters resource", expression="Parameters")
    pairs: list[tuple[str, str]] = []
    for i, parameter in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise InvalidRequest("Each parameter needs a name", expression=where)
        name = parameter["name"]
        reference = parameter.get("valueReference")
        if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
            pairs.append((name, reference["reference"]))
            continue
        values = [parameter[k] for k in _POST_VALUE_KEYS if isinstance(parameter.get(k), str)]
        if len(values) != 1:
            raise InvalidRequest(
                f"Parameter '{name}' needs one value (valueString, valueInstant, valueCode"
                " or, for patient, valueReference)",
                expression=where,
            )
        pairs.append((name, values[0]))
    return pairs


class _Reader:
    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient
        self.warnings: list[str] = []

    def unsupported(self, what: str, expression: str) -> None:
        """Refuse (400), or under handling=lenient leave it out and say so."""
        if not self.lenient:
            raise NotSupported(
                f"{what} (send Prefer: handling=lenient to ignore it)", expression=expression
            )
        self.warnings.append(f"{expression}: {what}; ignored (handling=lenient)")


def _types(reader: _Reader, values: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        for t in (part.strip() for part in value.split(",")):
            if not t:
                continue
            if not is_resource_type(t):
                reader.unsupported(f"'{t}' is not an R4 resource type", "_type")
            elif t not in found:
                found.append(t)
    return tuple(found)


def _filters(
    reader: _Reader, values: Sequence[str]
) -> dict[str, tuple[tuple[tuple[str, str], ...], ...]]:
    found: dict[str, list[tuple[tuple[str, str], ...]]] = {}
    for value in values:
        for query in _FILTER_SPLIT.split(value):
            res_type, mark, rest = query.strip().partition("?")
            if not mark or not is_resource_type(res_type):
                raise InvalidRequest(
                    f"_typeFilter '{query}' is not a query of the form Type?param=value",
                    expression="_typeFilter",
                )
            params = parse_qsl(rest, keep_blank_values=True)
            if not params:
                raise InvalidRequest(
                    f"_typeFilter '{query}' has no criteria", expression="_typeFilter"
                )
            kept: list[tuple[str, str]] = []
            for name, val in params:
                if name.partition(":")[0] in RESULT_PARAMETERS:
                    reader.unsupported(
                        f"'{name}' in '{query}' is not a filter criterion", "_typeFilter"
                    )
                    continue
                parsed = parse_query(res_type, [(name, val)])  # raises on malformed values
                if parsed.unknown:
                    reader.unsupported(
                        f"'{parsed.unknown[0]}' is not a search parameter of {res_type}",
                        "_typeFilter",
                    )
                    continue
                kept.append((name, val))
            if kept:
                found.setdefault(res_type, []).append(tuple(kept))
    return {t: tuple(qs) for t, qs in found.items()}


def _patients(values: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        res_type, _, id = value.strip().partition("/")
        if res_type != "Patient" or not is_valid_id(id):
            raise InvalidRequest(
                f"patient '{value}' is not a reference Patient/[id]", expression="patient"
            )
        if id not in found:
            found.append(id)
    return tuple(found)


def parse_export(
    level: str,
    pairs: Sequence[tuple[str, str]],
    *,
    group: str | None = None,
    lenient: bool = False,
) -> ExportRequest:
    """The kick-off parameters ``pairs`` of an export at ``level`` (system, patient, group)."""
    reader = _Reader(lenient)
    by_name: dict[str, list[str]] = {}
    for name, value in pairs:
        by_name.setdefault(name, []).append(value)
    formats = by_name.pop("_outputFormat", [])
    for fmt in formats:
        if fmt not in OUTPUT_FORMATS:
            # Not a parameter to ignore: a client asking for another format cannot read ndjson.
            raise NotSupported(
                f"_outputFormat '{fmt}' is not supported; this server writes"
                " application/fhir+ndjson",
                expression="_outputFormat",
            )
    since = None
    for raw in by_name.pop("_since", [])[-1:]:
        since = parse_instant(raw)
        if since is None or "T" not in raw:
            raise InvalidRequest(f"_since '{raw}' is not an instant", expression="_since")
    types = _types(reader, by_name.pop("_type", []))
    filters = _filters(reader, by_name.pop("_typeFilter", []))
    patients: tuple[str, ...] = ()
    if "patient" in by_name:
        values = by_name.pop("patient")
        if level == "system":
            reader.unsupported("'patient' applies to Patient and Group exports only", "patient")
        else:
            patients = _patients(values)
    for value in by_name.pop("includeAssociatedData", []):
        reader.unsupported(
            f"includeAssociatedData '{value}' is not supported", "includeAssociatedData"
        )
    for name in by_name:
        reader.unsupported(f"'{name}' is not a parameter this server's $export supports", name)
    if group is not None and not is_valid_id(group):
        raise InvalidRequest(f"'{group}' is not a valid Group id", expression="Group")
    return ExportRequest(
        level=level,
        group=group,
        types=types,
        since=since,
        filters=filters,
        patients=patients,
        warnings=tuple(reader.warnings),
    )
