"""Conversion functions (spec §5.5) and iif (spec §5.5.1)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from ..collections_ import single_value
from ..env import Env, Fn
from ..errors import FhirPathEvaluationError
from ..model import Node
from ..quantity import CALENDAR_UNITS, Quantity
from ..temporal import DATE, DATETIME, TIME, Temporal
from ..ucum import is_valid
from .registry import function


@function("iif", 2, 3, lazy=True)
def iif(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    """Arguments see the input as $this; only the chosen branch is evaluated (spec §5.5.1)."""
    if len(inp) > 1:
        raise FhirPathEvaluationError("iif() expects at most one input item")
    context = inp if inp else focus
    criterion = args[0](context, env)
    if len(criterion) > 1:
        raise FhirPathEvaluationError("iif() criterion must be a single Boolean")
    chosen: bool
    if not criterion:
        chosen = False
    else:
        value = criterion[0]
        if type(value) is Node:
            value = value.value
        if value is not True and value is not False:
            raise FhirPathEvaluationError("iif() criterion must be a Boolean")
        chosen = bool(value)
    if chosen:
        return args[1](context, env)
    return args[2](context, env) if len(args) > 2 else []


_TRUE_STRINGS: Final = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE_STRINGS: Final = frozenset({"false", "f", "no", "n", "0", "0.0"})
_INTEGER_RE: Final = re.compile(r"[+-]?\d+")
_DECIMAL_RE: Final = re.compile(r"[+-]?\d+(?:\.\d+)?")
_QUANTITY_RE: Final = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(?:'([^']+)'|([A-Za-z]+))?")


def as_boolean(value: Any) -> bool | None:
    if value is True or value is False:
        return bool(value)
    if type(value) is int:
        return {1: True, 0: False}.get(value)
    if type(value) is Decimal:
        return True if value == 1 else False if value == 0 else None
    if type(value) is str:
        lowered = value.lower()
        if lowered in _TRUE_STRINGS:
            return True
        if lowered in _FALSE_STRINGS:
            return False
    return None


def as_integer(value: Any) -> int | None:
    if value is True or value is False:
        return int(value)
    if type(value) is int:
        return value
    if type(value) is str and _INTEGER_RE.fullmatch(value):
        return int(value)
    return None


def as_decimal(value: Any) -> Decimal | None:
    if value is True or value is False:
        return Decimal("1.0") if value else Decimal("0.0")
    if type(value) is int:
        return Decimal(value)
    if type(value) is Decimal:
        return value
    if type(value) is str and _DECIMAL_RE.fullmatch(value):
        return Decimal(value)
    return None


def as_string(value: Any) -> str | None:
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is Decimal:
        return format(value, "f")  # never exponent notation: 1E+3 -> "1000"
    if type(value) in (str, int, Temporal, Quantity):
        return str(value)
    return None


def as_quantity(value: Any) -> Quantity | None:
    if value is True or value is False:
        return Quantity(Decimal("1.0") if value else Decimal("0.0"), "1")
    if type(value) is int or type(value) is Decimal:
        return Quantity(Decimal(value), "1")
    if type(value) is Quantity:
        return value
    if type(value) is str:
        m = _QUANTITY_RE.fullmatch(value.strip())
        if m is None:
            return None
        number, quoted, word = m.groups()
        if word is not None:
            # Unquoted units must be calendar keywords ('1 wk' is not a quantity, spec §5.5.8).
            return Quantity(Decimal(number), word) if word in CALENDAR_UNITS else None
        if quoted is not None and not (quoted in CALENDAR_UNITS or is_valid(quoted)):
            return None
        return Quantity(Decimal(number), quoted or "1")
    return None


def _as_temporal(kind: str) -> Callable[[Any], Temporal | None]:
    def convert(value: Any) -> Temporal | None:
        if type(value) is str:
            return Temporal.parse(kind, value)
        if type(value) is Temporal:
            if value.kind == kind:
                return value
            if kind == DATETIME and value.kind == DATE:
                return Temporal(DATETIME, value.parts)
            if kind == DATE and value.kind == DATETIME:
                return Temporal(DATE, value.parts[:3])
        return None

    return convert


def _register(name: str, convert: Callable[[Any], Any]) -> None:
    def to_(inp: list[Any], env: Env) -> list[Any]:
        value = single_value(inp, f"to{name}()")
        if value is None:
            return []
        result = convert(value)
        return [] if result is None else [result]

    def converts_to(inp: list[Any], env: Env) -> list[Any]:
        value = single_value(inp, f"convertsTo{name}()")
        if value is None:
            return []
        return [convert(value) is not None]

    function(f"to{name}")(to_)
    function(f"convertsTo{name}")(converts_to)


_register("Boolean", as_boolean)
_register("Integer", as_integer)
_register("Decimal", as_decimal)
_register("String", as_string)
_register("Date", _as_temporal(DATE))
_register("DateTime", _as_temporal(DATETIME))
_register("Time", _as_temporal(TIME))


def _quantity_with_unit(inp: list[Any], unit: list[Any], what: str) -> Quantity | None:
    value = single_value(inp, what)
    if value is None:
        return None
    quantity = as_quantity(value)
    target = single_value(unit, what)
    if quantity is None or target is None:
        return quantity
    if type(target) is not str:
        raise FhirPathEvaluationError(f"{what} expects a unit string")
    return quantity.convert(target)


@function("toQuantity", 0, 1)
def to_quantity(inp: list[Any], env: Env, unit: list[Any] | None = None) -> list[Any]:
    result = _quantity_with_unit(inp, unit or [], "toQuantity()")
    return [] if result is None else [result]


@function("convertsToQuantity", 0, 1)
def converts_to_quantity(inp: list[Any], env: Env, unit: list[Any] | None = None) -> list[Any]:
    if not inp:
        return []
    return [_quantity_with_unit(inp, unit or [], "convertsToQuantity()") is not None]
