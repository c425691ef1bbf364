"""Math functions (spec §5.7). Results use ``decimal`` (28 significant digits)."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from ..collections_ import single_value
from ..decimals import round_to
from ..env import Env
from ..errors import FhirPathEvaluationError
from ..quantity import Quantity
from .registry import function


def _number(inp: list[Any], what: str) -> int | Decimal | None:
    value = single_value(inp, what)
    if value is None:
        return None
    if type(value) is int or type(value) is Decimal:
        return value
    raise FhirPathEvaluationError(f"{what} expects a number")


def _clean(value: Decimal) -> Decimal:
    """Drop float-like noise from transcendental results: ln(16)/ln(2) is exactly 4."""
    rounded = value.quantize(Decimal("1E-20")) if abs(value) < Decimal("1E8") else value
    return rounded.normalize() if rounded == rounded.to_integral_value() else rounded


@function("abs")
def abs_(inp: list[Any], env: Env) -> list[Any]:
    value = single_value(inp, "abs()")
    if value is None:
        return []
    if type(value) is Quantity:
        return [Quantity(abs(value.value), value.unit)]
    if type(value) is int or type(value) is Decimal:
        return [abs(value)]
    raise FhirPathEvaluationError("abs() expects a number or quantity")


def _integral(name: str, rounding: str) -> None:
    def impl(inp: list[Any], env: Env) -> list[Any]:
        value = _number(inp, f"{name}()")
        if value is None:
            return []
        return [int(Decimal(value).to_integral_value(rounding=rounding))]

    function(name)(impl)


_integral("ceiling", ROUND_CEILING)
_integral("floor", ROUND_FLOOR)
_integral("truncate", ROUND_DOWN)


@function("exp")
def exp(inp: list[Any], env: Env) -> list[Any]:
    value = _number(inp, "exp()")
    return [] if value is None else [Decimal(value).exp()]


@function("ln")
def ln(inp: list[Any], env: Env) -> list[Any]:
    value = _number(inp, "ln()")
    if value is None or value <= 0:
        return []
    return [_clean(Decimal(value).ln())]


@function("log", 1)
def log(inp: list[Any], env: Env, base: list[Any]) -> list[Any]:
    value, b = _number(inp, "log()"), _number(base, "log()")
    if value is None or b is None or value <= 0 or b <= 0 or b == 1:
        return []
    return [_clean(Decimal(value).ln() / Decimal(b).ln())]


@function("power", 1)
def power(inp: list[Any], env: Env, exponent: list[Any]) -> list[Any]:
    value, e = _number(inp, "power()"), _number(exponent, "power()")
    if value is None or e is None:
        return []
    if type(value) is int and type(e) is int and e >= 0 and e * value.bit_length() <= 4096:
        return [value**e]  # exact; larger results go through Decimal (28 digits, may overflow)
    try:
        result = Decimal(value) ** Decimal(e)
    except InvalidOperation:
        return []  # e.g. (-1).power(0.5) has no real result
    return [result]


@function("round", 0, 1)
def round_(inp: list[Any], env: Env, precision: list[Any] | None = None) -> list[Any]:
    value = _number(inp, "round()")
    if value is None:
        return []
    digits = single_value(precision, "round()") if precision is not None else 0
    if digits is None:
        digits = 0
    if type(digits) is not int or digits < 0:
        raise FhirPathEvaluationError("round() precision must be a non-negative Integer")
    return [round_to(Decimal(value), digits)]


@function("sqrt")
def sqrt(inp: list[Any], env: Env) -> list[Any]:
    value = _number(inp, "sqrt()")
    if value is None or value < 0:
        return []
    return [_clean(Decimal(value).sqrt())]
