"""Operators on collections (spec §6 "Operations"): equality, comparison, membership,
three-valued Boolean logic, arithmetic and string concatenation."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal, DivisionByZero, InvalidOperation
from typing import Any

from .collections_ import single_value
from .compare import equal, equivalent, order
from .errors import FhirPathEvaluationError
from .model import Node
from .quantity import UCUM_TO_CALENDAR, Quantity
from .temporal import Temporal
from .typesys import system_type

BinaryOp = Callable[[list[Any], list[Any]], list[Any]]


# -- equality (§6.1) ---------------------------------------------------------------------------


def op_equal(left: list[Any], right: list[Any]) -> list[Any]:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    unknown = False
    for a, b in zip(left, right, strict=True):
        result = equal(a, b)
        if result is False:
            return [False]
        if result is None:
            unknown = True
    return [] if unknown else [True]


def op_not_equal(left: list[Any], right: list[Any]) -> list[Any]:
    result = op_equal(left, right)
    return [not result[0]] if result else []


def op_equivalent(left: list[Any], right: list[Any]) -> list[Any]:
    if len(left) != len(right):
        return [False]
    if len(left) == 1:
        return [equivalent(left[0], right[0])]
    remaining = list(right)
    for a in left:  # order does not matter for ~ (spec §6.1.3)
        for i, b in enumerate(remaining):
            if equivalent(a, b):
                del remaining[i]
                break
        else:
            return [False]
    return [True]


def op_not_equivalent(left: list[Any], right: list[Any]) -> list[Any]:
    return [not op_equivalent(left, right)[0]]


# -- comparison (§6.2) -------------------------------------------------------------------------


def _comparison(test: Callable[[int], bool], symbol: str) -> BinaryOp:
    def compare(left: list[Any], right: list[Any]) -> list[Any]:
        if not left or not right:
            return []
        if len(left) > 1 or len(right) > 1:
            raise FhirPathEvaluationError(f"'{symbol}' expects single items")
        result = order(left[0], right[0])
        return [] if result is None else [test(result)]

    return compare


op_less = _comparison(lambda c: c < 0, "<")
op_greater = _comparison(lambda c: c > 0, ">")
op_less_equal = _comparison(lambda c: c <= 0, "<=")
op_greater_equal = _comparison(lambda c: c >= 0, ">=")


# -- membership (§6.4) -------------------------------------------------------------------------


def op_in(left: list[Any], right: list[Any]) -> list[Any]:
    if not left:
        return []
    if len(left) > 1:
        raise FhirPathEvaluationError("'in' expects a single item on the left")
    item = left[0]
    return [any(equal(item, other) for other in right)]


def op_contains(left: list[Any], right: list[Any]) -> list[Any]:
    return op_in(right, left)


# -- arithmetic (§6.6) -------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is Decimal


def _operands(left: list[Any], right: list[Any], symbol: str) -> tuple[Any, Any] | None:
    a = single_value(left, f"'{symbol}'")
    b = single_value(right, f"'{symbol}'")
    if a is None or b is None:
        return None
    return a, b


def _type_error(symbol: str, a: Any, b: Any) -> FhirPathEvaluationError:
    return FhirPathEvaluationError(
        f"Operator '{symbol}' is not defined for {_name(a)} and {_name(b)}"
    )


def _name(value: Any) -> str:
    if type(value) is Node:
        return value.fhir_type or "a complex element"
    return system_type(value) or type(value).__name__


def shift_temporal(value: Temporal, quantity: Quantity, sign: int) -> Temporal:
    """Date/time plus a time-valued quantity (spec §6.6.1; decimals are truncated)."""
    unit = quantity.calendar or UCUM_TO_CALENDAR.get(quantity.unit)
    if unit is None:
        raise FhirPathEvaluationError(
            f"'{quantity.unit}' is not a calendar duration usable with dates"
        )
    amount = int(quantity.value.to_integral_value(rounding=ROUND_DOWN)) * sign
    try:
        return value.add(amount, unit)
    except (OverflowError, ValueError) as exc:
        raise FhirPathEvaluationError(f"Date arithmetic out of range: {exc}") from None


def op_plus(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "+")
    if pair is None:
        return []
    a, b = pair
    if _is_int(a) and _is_int(b):
        return [a + b]
    if _is_number(a) and _is_number(b):
        return [Decimal(a) + Decimal(b)]
    if type(a) is str and type(b) is str:
        return [a + b]
    if type(a) is Temporal and type(b) is Quantity:
        return [shift_temporal(a, b, 1)]
    if type(a) is Quantity and type(b) is Quantity:
        result = a.add(b, 1)
        return [] if result is None else [result]
    raise _type_error("+", a, b)


def op_minus(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "-")
    if pair is None:
        return []
    a, b = pair
    if _is_int(a) and _is_int(b):
        return [a - b]
    if _is_number(a) and _is_number(b):
        return [Decimal(a) - Decimal(b)]
    if type(a) is Temporal and type(b) is Quantity:
        return [shift_temporal(a, b, -1)]
    if type(a) is Quantity and type(b) is Quantity:
        result = a.add(b, -1)
        return [] if result is None else [result]
    raise _type_error("-", a, b)


def op_multiply(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "*")
    if pair is None:
        return []
    a, b = pair
    if _is_int(a) and _is_int(b):
        return [a * b]
    if _is_number(a) and _is_number(b):
        return [Decimal(a) * Decimal(b)]
    if type(a) is Quantity and type(b) is Quantity:
        result = a.multiply(b)
        return [] if result is None else [result]
    if type(a) is Quantity and _is_number(b):
        return [Quantity(a.value * Decimal(b), a.unit)]
    if _is_number(a) and type(b) is Quantity:
        return [Quantity(Decimal(a) * b.value, b.unit)]
    raise _type_error("*", a, b)


def op_divide(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "/")
    if pair is None:
        return []
    a, b = pair
    try:
        if _is_number(a) and _is_number(b):
            if b == 0:
                return []
            return [Decimal(a) / Decimal(b)]
        if type(a) is Quantity and type(b) is Quantity:
            result = a.divide(b)
            return [] if result is None else [result]
        if type(a) is Quantity and _is_number(b):
            return [] if b == 0 else [Quantity(a.value / Decimal(b), a.unit)]
    except (DivisionByZero, InvalidOperation):
        return []
    raise _type_error("/", a, b)


def op_div(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "div")
    if pair is None:
        return []
    a, b = pair
    if not (_is_number(a) and _is_number(b)):
        raise _type_error("div", a, b)
    if b == 0:
        return []
    quotient = (Decimal(a) / Decimal(b)).to_integral_value(rounding=ROUND_DOWN)
    return [int(quotient)]


def op_mod(left: list[Any], right: list[Any]) -> list[Any]:
    pair = _operands(left, right, "mod")
    if pair is None:
        return []
    a, b = pair
    if not (_is_number(a) and _is_number(b)):
        raise _type_error("mod", a, b)
    if b == 0:
        return []
    remainder = Decimal(a) % Decimal(b)  # sign follows the dividend, like truncated division
    return [int(remainder)] if _is_int(a) and _is_int(b) else [remainder]


def op_concat(left: list[Any], right: list[Any]) -> list[Any]:
    """``&``: string concatenation where an empty operand counts as '' (spec §6.6.6)."""
    a = single_value(left, "'&'")
    b = single_value(right, "'&'")
    a = "" if a is None else a
    b = "" if b is None else b
    if type(a) is not str or type(b) is not str:
        raise _type_error("&", a, b)
    return [a + b]


def negate(collection: list[Any]) -> list[Any]:
    value = single_value(collection, "unary '-'")
    if value is None:
        return []
    if _is_number(value):
        return [-value]
    if type(value) is Quantity:
        return [Quantity(-value.value, value.unit)]
    raise FhirPathEvaluationError(f"Unary '-' is not defined for {_name(value)}")


def positive(collection: list[Any]) -> list[Any]:
    value = single_value(collection, "unary '+'")
    if value is None:
        return []
    if _is_number(value) or type(value) is Quantity:
        return [value]
    raise FhirPathEvaluationError(f"Unary '+' is not defined for {_name(value)}")


BINARY: dict[str, BinaryOp] = {
    "=": op_equal,
    "!=": op_not_equal,
    "~": op_equivalent,
    "!~": op_not_equivalent,
    "<": op_less,
    ">": op_greater,
    "<=": op_less_equal,
    ">=": op_greater_equal,
    "in": op_in,
    "contains": op_contains,
    "+": op_plus,
    "-": op_minus,
    "*": op_multiply,
    "/": op_divide,
    "div": op_div,
    "mod": op_mod,
    "&": op_concat,
}
