"""Decimal helpers: precision-aware equivalence and boundaries (spec §6.1.3;
FHIRPath 2.1 lowBoundary()/highBoundary()).

FHIRPath decimals keep their written precision (``1.10`` has two decimal places), which
``decimal.Decimal`` preserves through its exponent.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation


def places(value: Decimal) -> int:
    """Number of digits after the decimal point as written (``1.587`` → 3, ``120`` → 0)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def round_to(value: Decimal, digits: int) -> Decimal:
    """Round half away from zero, as ``round()`` requires (spec §5.7.9)."""
    return value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def decimal_equivalent(a: Decimal, b: Decimal) -> bool:
    """Equal when rounded to the precision of the less precise value (spec §6.1.3 "~")."""
    digits = min(places(a), places(b))
    try:
        return round_to(a, digits) == round_to(b, digits)
    except InvalidOperation:
        return a == b


def boundary(value: Decimal, precision: int | None, *, high: bool) -> Decimal | None:
    """lowBoundary()/highBoundary() of a decimal (FHIRPath 2.1 "Utility functions").

    The value stands for the interval of numbers that round to it; the boundary is that interval's
    end, expressed with ``precision`` decimal places (default 8, at most 28).
    """
    if precision is None:
        precision = 8
    if precision < 0 or precision > 28:
        return None
    if value and abs(value) < Decimal(1).scaleb(-precision):
        # No significant digit survives at this precision; the official suite expects zero
        # with the value's sign (0.0034.lowBoundary(1) = 0.0, (-0.0034).lowBoundary(1) = -0.0).
        return Decimal(0).scaleb(-precision).copy_sign(value)
    half = Decimal(5).scaleb(-(places(value) + 1))
    edge = value + half if high else value - half
    rounding = ROUND_CEILING if high else ROUND_FLOOR
    if precision >= places(edge):
        return edge.quantize(Decimal(1).scaleb(-precision))
    return edge.quantize(Decimal(1).scaleb(-precision), rounding=rounding)
