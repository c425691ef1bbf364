"""Equality ``=``, equivalence ``~`` and ordering ``<`` of single items (spec §6.1, §6.2).

``equal`` returns ``None`` when the answer is unknown (dates of different precision, quantities
with incomparable units): the operators then return the empty collection.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .decimals import decimal_equivalent
from .errors import FhirPathEvaluationError
from .model import Node
from .quantity import Quantity
from .temporal import DATE, DATETIME, TIME, Temporal
from .values import to_system


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is Decimal


def _untyped_string(item: Any) -> bool:
    """A string the definitions did not type (JSON of an unknown resource or element)."""
    return type(item) is Node and item.type_key is None and type(item.value) is str


def _coerce_untyped(ra: Any, rb: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Let an untyped JSON string meet a date/time; typed strings never convert (§6.1)."""
    if type(b) is Temporal and _untyped_string(ra):
        parsed = Temporal.parse(b.kind, a)
        if parsed is not None:
            return parsed, b
    elif type(a) is Temporal and _untyped_string(rb):
        parsed = Temporal.parse(a.kind, b)
        if parsed is not None:
            return a, parsed
    return a, b


def _temporal_compatible(a: Temporal, b: Temporal) -> bool:
    # Date and DateTime compare with each other; Time only with Time (spec §6.1.1).
    return (a.kind == TIME) == (b.kind == TIME)


def equal(ra: Any, rb: Any) -> bool | None:
    a = to_system(ra)
    b = to_system(rb)
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is Temporal:
            if not _temporal_compatible(a, b):
                return False
            c = a.compare(b)
            return None if c is None else c == 0
        if ta is Quantity:
            c = a.compare(b)
            return None if c is None else c == 0
        if ta is Node:
            return deep_equal(a.value, b.value)
        return bool(a == b)
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if ta is str or tb is str:
        a2, b2 = _coerce_untyped(ra, rb, a, b)
        if type(a2) is Temporal and type(b2) is Temporal:
            return equal(a2, b2)
    return False


def deep_equal(a: Any, b: Any) -> bool:
    """Member-wise equality of complex values (spec §6.1.1 "Complex types")."""
    if type(a) is dict and type(b) is dict:
        if a.keys() != b.keys():
            return False
        return all(deep_equal(v, b[k]) for k, v in a.items())
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is bool or type(b) is bool:
        return a is b
    return bool(a == b)


def _normalize_string(s: str) -> str:
    return " ".join(s.split()).lower()


def equivalent(ra: Any, rb: Any) -> bool:
    a = to_system(ra)
    b = to_system(rb)
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        return _normalize_string(a) == _normalize_string(b)
    if _is_number(a) and _is_number(b):
        return decimal_equivalent(Decimal(a), Decimal(b))
    if ta is Temporal and tb is Temporal:
        if not _temporal_compatible(a, b) or not a.same_precision(b):
            return False
        return bool(a.compare(b) == 0)
    if ta is Quantity and tb is Quantity:
        return bool(a.equivalent(b))
    if ta is Node and tb is Node:
        return deep_equivalent(a.value, b.value)
    if ta is bool and tb is bool:
        return bool(a == b)
    if ta is str or tb is str:
        a2, b2 = _coerce_untyped(ra, rb, a, b)
        if type(a2) is Temporal and type(b2) is Temporal:
            return equivalent(a2, b2)
    return False


def deep_equivalent(a: Any, b: Any) -> bool:
    if type(a) is dict and type(b) is dict:
        keys = (a.keys() | b.keys()) - {"id"}
        return all(k in a and k in b and deep_equivalent(a[k], b[k]) for k in keys)
    if type(a) is list and type(b) is list:
        return len(a) == len(b) and all(deep_equivalent(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is str and type(b) is str:
        return _normalize_string(a) == _normalize_string(b)
    return deep_equal(a, b)


def order(ra: Any, rb: Any) -> int | None:
    """-1/0/1 for ``<``-style comparison; ``None`` when unknown; error for other types."""
    a = to_system(ra)
    b = to_system(rb)
    ta, tb = type(a), type(b)
    if (_is_number(a) and _is_number(b)) or (ta is str and tb is str):
        return int(a > b) - int(a < b)
    a, b = _coerce_untyped(ra, rb, a, b)
    ta, tb = type(a), type(b)
    if ta is Temporal and tb is Temporal and _temporal_compatible(a, b):
        result: int | None = a.compare(b)
        return result
    if ta is Quantity and tb is Quantity:
        quantity_result: int | None = a.compare(b)
        return quantity_result
    raise FhirPathEvaluationError(f"Cannot compare {_describe(a)} with {_describe(b)}")


def _describe(value: Any) -> str:
    if type(value) is Node:
        return f"a {value.fhir_type or 'complex'} element"
    if type(value) is Temporal:
        return {DATE: "a Date", DATETIME: "a DateTime", TIME: "a Time"}[value.kind]
    return f"a {type(value).__name__} value"
