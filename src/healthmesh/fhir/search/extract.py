"""From a resource to its index rows: every search parameter of its type, evaluated at write time.

Each parameter's FHIRPath expression selects typed elements; each element type maps to
values of the parameter's search type as R4 search.html prescribes (e.g. a token from a
CodeableConcept is each of its codings, from an Identifier its system|value). Rows here
lack (res_type, res_id, patient_id), which the store adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from healthmesh.fhir import fhirpath
from healthmesh.fhir.dates import parse_interval
from healthmesh.fhir.fhirpath.model import resource_node
from healthmesh.fhir.fhirpath.ucum import UnitError, parse_unit
from healthmesh.fhir.ids import parse_relative
from healthmesh.fhir.search.normalize import normalize
from healthmesh.fhir.search.plain_paths import walk
from healthmesh.fhir.search.registry import IndexedParam, indexed_params

# display: Coding.display / CodeableConcept.text / Identifier.type.text, normalised for :text
TokenRow = tuple[str, str | None, str | None, str | None]  # param, system, code, display
StringRow = tuple[str, str, str]  # param, norm, exact
DateRow = tuple[str, datetime, datetime]  # param, low, high
NumberRow = tuple[str, Decimal]
QuantityRow = tuple[str, Decimal, str | None, str | None, str | None, Decimal | None, str | None]
UriRow = tuple[str, str]
ReferenceRow = tuple[str, str | None, str | None, str | None]  # param, type, id, url

UCUM = "http://unitsofmeasure.org"
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)


@dataclass(slots=True)
class IndexRows:
    token: list[TokenRow] = field(default_factory=list)
    string: list[StringRow] = field(default_factory=list)
    date: list[DateRow] = field(default_factory=list)
    number: list[NumberRow] = field(default_factory=list)
    quantity: list[QuantityRow] = field(default_factory=list)
    uri: list[UriRow] = field(default_factory=list)
    reference: list[ReferenceRow] = field(default_factory=list)
    # Composite components: (type, row, element number); the row's param is `<code>$<n>`.
    composite: list[tuple[str, tuple[Any, ...], int]] = field(default_factory=list)

    def total(self) -> int:
        return sum(
            len(rows)
            for rows in (
                self.token,
                self.string,
                self.date,
                self.number,
                self.quantity,
                self.uri,
                self.reference,
            )
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- token ------------------------------------------------------------------------------


def _tokens(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    value, kind = node.value, node.fhir_type
    if isinstance(value, Mapping):
        if kind == "CodeableConcept":
            for coding in value.get("coding", ()):
                if isinstance(coding, Mapping):
                    _coding(param, coding, rows)
            if text := _str(value.get("text")):
                rows.token.append((param, None, None, normalize(text)))
        elif kind == "Coding":
            _coding(param, value, rows)
        elif kind == "Identifier":
            _identifier(param, value, rows)
        elif kind == "ContactPoint" and _str(value.get("value")):
            rows.token.append((param, _str(value.get("system")), value["value"], None))
        return
    if isinstance(value, bool):
        rows.token.append((param, None, "true" if value else "false", None))
    elif isinstance(value, str | int) and str(value):
        rows.token.append((param, None, str(value), None))


def _coding(param: str, coding: Mapping[str, Any], rows: IndexRows) -> None:
    system, code = _str(coding.get("system")), _str(coding.get("code"))
    if system or code:
        display = _str(coding.get("display"))
        rows.token.append((param, system, code, normalize(display) if display else None))


def _identifier(param: str, ident: Mapping[str, Any], rows: IndexRows) -> None:
    system, value = _str(ident.get("system")), _str(ident.get("value"))
    kind = ident.get("type")
    if system or value:
        text = _str(kind.get("text")) if isinstance(kind, Mapping) else None
        rows.token.append((param, system, value, normalize(text) if text else None))
    # :of-type (R4 search.html#modifiers): type system | type code | value, as its own rows.
    if value and isinstance(kind, Mapping):
        for coding in kind.get("coding", ()):
            if isinstance(coding, Mapping) and _str(coding.get("code")):
                rows.token.append(
                    (
                        f"{param}:of-type",
                        _str(coding.get("system")),
                        f"{coding['code']}|{value}",
                        None,
                    )
                )


# --- string -----------------------------------------------------------------------------

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _strings(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    value = node.value
    if isinstance(value, Mapping):
        parts = (
            _NAME_PARTS
            if node.fhir_type == "HumanName"
            else _ADDRESS_PARTS
            if node.fhir_type == "Address"
            else ()
        )
        for part in parts:
            item = value.get(part)
            for raw in item if isinstance(item, list) else [item]:
                if text := _str(raw):
                    rows.string.append((param, normalize(text), text))
    elif text := _str(value):
        rows.string.append((param, normalize(text), text))


# --- date -------------------------------------------------------------------------------


def _interval(value: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(value, str):
        return None
    return _parsed_interval(value)


@lru_cache(maxsize=4096)
def _parsed_interval(value: str) -> tuple[datetime, datetime] | None:
    # Cached: a record repeats its timestamps (an encounter's start is its observations'
    # effective time, their issued time, the report's date ...).
    interval = parse_interval(value)
    return (interval.low, interval.high) if interval else None


def _dates(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    value = node.value
    if isinstance(value, Mapping):
        if node.fhir_type == "Period":
            start, end = _interval(value.get("start")), _interval(value.get("end"))
            if start or end:
                rows.date.append(
                    (param, start[0] if start else EARLIEST, end[1] if end else LATEST)
                )
        elif node.fhir_type == "Timing":
            events = [i for i in (_interval(e) for e in value.get("event", ())) if i]
            bounds = (
                value.get("repeat", {}).get("boundsPeriod")
                if isinstance(value.get("repeat"), Mapping)
                else None
            )
            if isinstance(bounds, Mapping):
                start, end = _interval(bounds.get("start")), _interval(bounds.get("end"))
                if start or end:
                    events.append((start[0] if start else EARLIEST, end[1] if end else LATEST))
            if events:
                rows.date.append((param, min(e[0] for e in events), max(e[1] for e in events)))
        return
    interval = _interval(value)
    if interval:
        rows.date.append((param, *interval))


# --- number and quantity ----------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _numbers(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    number = _decimal(node.value)
    if number is not None:
        rows.number.append((param, number))


def canonical(
    value: Decimal, system: str | None, code: str | None
) -> tuple[Decimal | None, str | None]:
    """The value in UCUM base units and a key naming the dimension, where UCUM can say."""
    unit = ucum_unit(system, code)
    if unit is None:
        return None, None
    return value * unit[0], unit[1]


@lru_cache(maxsize=4096)
def ucum_unit(system: str | None, code: str | None) -> tuple[Decimal, str] | None:
    """(factor to UCUM base units, dimension key) of a UCUM code; None when not convertible."""
    if system != UCUM or code is None:
        return None
    try:
        unit = parse_unit(code)
    except (UnitError, ArithmeticError):
        return None
    if unit.special:
        return None
    return unit.factor, "ucum:" + ",".join(str(d) for d in unit.dims)


def _quantities(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    value = node.value
    if not isinstance(value, Mapping):
        return
    number = _decimal(value.get("value"))
    if number is None:
        return
    if node.fhir_type == "Money":
        rows.quantity.append(
            (param, number, "urn:iso:std:iso:4217", _str(value.get("currency")), None, None, None)
        )
        return
    if node.fhir_type not in _QUANTITY_TYPES and node.fhir_type is not None:
        return
    system, code, unit = _str(value.get("system")), _str(value.get("code")), _str(value.get("unit"))
    rows.quantity.append((param, number, system, code, unit, *canonical(number, system, code)))


# --- uri and reference ------------------------------------------------------------------


def _uris(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    if _str(node.value):
        rows.uri.append((param, node.value))


def _references(param: str, node: fhirpath.Node, rows: IndexRows) -> None:
    value = node.value
    if isinstance(value, Mapping):
        literal = _str(value.get("reference"))
        ident = value.get("identifier")
        if isinstance(ident, Mapping):
            _identifier(f"{param}:identifier", ident, rows)
        if literal is None or literal.startswith("#"):
            return
    elif _str(value):  # canonical / uri references
        literal = value
    else:
        return
    rows.reference.append((param, *_target(literal)))


@lru_cache(maxsize=4096)
def _target(literal: str) -> tuple[str | None, str | None, str | None]:
    """(target type, target id, url) of a reference; cached, as a record names the same
    patient, encounter and practitioners over and over."""
    target = parse_relative(literal.split("/_history/", 1)[0])
    if target is not None:
        return target.resource_type, target.id, None
    tail = parse_relative("/".join(literal.split("/_history/", 1)[0].rsplit("/", 2)[-2:]))
    if tail is not None and "://" in literal:
        return tail.resource_type, tail.id, literal
    return None, None, literal


_EXTRACTORS: dict[str, Callable[[str, fhirpath.Node, IndexRows], None]] = {
    "token": _tokens,
    "string": _strings,
    "date": _dates,
    "number": _numbers,
    "quantity": _quantities,
    "uri": _uris,
    "reference": _references,
}


def _nodes(path: fhirpath.CompiledPath, root: fhirpath.Node) -> Iterator[fhirpath.Node]:
    try:
        for item in path.run(root):
            # Computed System values (rare in definitions) arrive bare: type them by value.
            yield item if type(item) is fhirpath.Node else fhirpath.Node(item, None, None)
    except fhirpath.FhirPathError:
        # A definition's expression that this resource's shape cannot evaluate (e.g. a
        # type-mismatched comparison) indexes nothing rather than failing the write.
        return


def extract(resource: Mapping[str, Any]) -> IndexRows:
    """Every index row of ``resource`` for the search parameters of its type."""
    rows = IndexRows()
    root = resource_node(resource)  # built once, shared by every expression
    memo: _Memo = {}
    present = resource.keys()
    for param in indexed_params(str(resource.get("resourceType"))):
        if param.keys is not None and present.isdisjoint(param.keys):
            continue  # none of the elements it selects from: nothing to index
        if param.components:
            if not any(present.isdisjoint(keys) for keys in param.component_keys):
                _composite(param, root, rows, memo)
            continue
        if param.type == "special":
            if param.code == "near":
                _positions(param, root, rows)
            continue
        extractor = _EXTRACTORS[param.type]
        nodes = _nodes(param.path, root) if param.steps is None else walk(param.steps, root)
        for node in nodes:
            extractor(param.code, node, rows)
    return rows


_Memo = dict[Any, Any]


def _composite(param: IndexedParam, root: fhirpath.Node, rows: IndexRows, memo: _Memo) -> None:
    """Each element the composite selects, its components' rows tagged with its number.

    Composites share base and component expressions (Observation's eight all evaluate
    ``code``), so evaluations — and the rows made of them — are remembered for the resource
    being indexed.
    """
    base_key = param.path.expression
    if base_key not in memo:
        memo[base_key] = list(_nodes(param.path, root))
    for elem, base in enumerate(memo[base_key]):
        parts: list[tuple[str, str, list[tuple[Any, ...]]]] = []
        for n, (kind, path) in enumerate(param.components):
            key = (base_key, elem, path.expression, kind)
            found = memo.get(key)
            if found is None:
                # Rows with an empty param name: the name is the composite's own, below
                # (an Identifier's ":of-type" rows keep their suffix).
                part = IndexRows()
                for node in _nodes(path, base):
                    _EXTRACTORS[kind]("", node, part)
                found = memo[key] = getattr(part, kind)
            if not found:
                break  # an element missing a component never matches
            parts.append((kind, f"{param.code}${n}", found))
        else:
            rows.composite.extend(
                (kind, (name + row[0], *row[1:]), elem)
                for kind, name, found in parts
                for row in found
            )


def _positions(param: IndexedParam, root: fhirpath.Node, rows: IndexRows) -> None:
    """Location.position as ``near$0`` (latitude) and ``near$1`` (longitude) of one element."""
    for elem, node in enumerate(_nodes(param.path, root)):
        value = node.value
        if not isinstance(value, Mapping):
            continue
        latitude, longitude = _decimal(value.get("latitude")), _decimal(value.get("longitude"))
        if latitude is not None and longitude is not None:
            rows.composite.append(("number", (f"{param.code}$0", latitude), elem))
            rows.composite.append(("number", (f"{param.code}$1", longitude), elem))


def extract_param(resource: Mapping[str, Any], code: str) -> IndexRows:
    """The index rows of one search parameter only: what a reindex for it writes."""
    rows = IndexRows()
    root = resource_node(resource)
    for param in indexed_params(str(resource.get("resourceType"))):
        if param.code != code:
            continue
        if param.components:
            _composite(param, root, rows, {})
            continue
        for node in _nodes(param.path, root):
            _EXTRACTORS[param.type](param.code, node, rows)
    return rows
