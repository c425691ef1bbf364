"""Mapping between FHIR primitives and FHIRPath System values (R4 fhirpath.html "Primitive
types": FHIR primitives are implicitly converted to System types for operators).

System values are plain Python objects: ``bool`` (Boolean), ``int`` (Integer), ``Decimal``
(Decimal), ``str`` (String), :class:`Temporal` (Date/DateTime/Time), :class:`Quantity`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from .model import Node
from .quantity import Quantity
from .temporal import DATE, DATETIME, TIME, Temporal

UCUM_SYSTEM: Final = "http://unitsofmeasure.org"

QUANTITY_TYPES: Final = frozenset(
    {"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"}
)


def _decimal(value: Any) -> Any:
    if type(value) is float:
        return Decimal(repr(value))
    if type(value) is int:
        return Decimal(value)
    if type(value) is str:
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def _temporal(kind: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is not str:
            return value
        parsed = Temporal.parse(kind, value)
        return value if parsed is None else parsed

    return convert


def _same(value: Any) -> Any:
    return value


def _float_to_decimal(value: Any) -> Any:
    return Decimal(repr(value)) if type(value) is float else value


_STRINGS: Final = (
    "string",
    "code",
    "id",
    "markdown",
    "uri",
    "url",
    "canonical",
    "oid",
    "uuid",
    "base64Binary",
    "xhtml",
)

STRING_TYPES: Final = frozenset(_STRINGS)

PRIMITIVE_SYSTEM_TYPE: Final[dict[str, str]] = {
    **dict.fromkeys(_STRINGS, "String"),
    "boolean": "Boolean",
    "integer": "Integer",
    "positiveInt": "Integer",
    "unsignedInt": "Integer",
    "integer64": "Integer",
    "decimal": "Decimal",
    "date": "Date",
    "dateTime": "DateTime",
    "instant": "DateTime",
    "time": "Time",
}

_CONVERTERS: Final[dict[str | None, Callable[[Any], Any]]] = {
    **dict.fromkeys(_STRINGS, _same),
    "boolean": _same,
    "integer": _same,
    "positiveInt": _same,
    "unsignedInt": _same,
    "integer64": _same,
    "decimal": _decimal,
    "date": _temporal(DATE),
    "dateTime": _temporal(DATETIME),
    "instant": _temporal(DATETIME),
    "time": _temporal(TIME),
    None: _float_to_decimal,
}


def quantity_from_fhir(data: Mapping[str, Any]) -> Quantity | None:
    """A FHIR Quantity as a System.Quantity: UCUM code when coded in UCUM, else the unit text."""
    value = data.get("value")
    if value is None or type(value) is bool:
        return None
    number = _decimal(value)
    if type(number) is not Decimal:
        return None
    code = data.get("code")
    if code and data.get("system") in (UCUM_SYSTEM, None):
        unit = code
    else:
        unit = data.get("unit") or code or "1"
    return Quantity(number, str(unit))


def to_system(item: Any) -> Any:
    """The System value of an item; complex nodes (other than quantities) stay nodes."""
    if type(item) is not Node:
        return item
    value = item.value
    if type(value) is dict:
        if item.fhir_type in QUANTITY_TYPES:
            q = quantity_from_fhir(value)
            return item if q is None else q
        return item
    converter = _CONVERTERS.get(item.fhir_type)
    if converter is None:
        return value
    return converter(value)


def is_primitive_node(item: Any) -> bool:
    return type(item) is Node and type(item.value) is not dict


def to_python(item: Any) -> Any:
    """What the public ``evaluate`` returns for one item: the JSON value of a node, or the
    System value itself (``Decimal``, ``Temporal``, ``Quantity`` …) for computed values."""
    if type(item) is Node:
        return item.value
    return item
