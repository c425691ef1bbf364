"""The System.Quantity type (spec §2.1.22) with UCUM and calendar-duration units.

A quantity written with a calendar keyword (``4 days``) keeps the keyword as its unit. For
comparison the keywords week…millisecond equal the UCUM definite durations ``wk`` … ``ms``,
while ``year``/``month`` are only comparable with each other (spec §2.1.22.1).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

from .decimals import decimal_equivalent
from .ucum import Unit, UnitError, parse_unit

CALENDAR_UNITS: Final[dict[str, str]] = {
    "year": "year",
    "years": "year",
    "month": "month",
    "months": "month",
    "week": "week",
    "weeks": "week",
    "day": "day",
    "days": "day",
    "hour": "hour",
    "hours": "hour",
    "minute": "minute",
    "minutes": "minute",
    "second": "second",
    "seconds": "second",
    "millisecond": "millisecond",
    "milliseconds": "millisecond",
}

# Calendar keyword → the UCUM unit used for conversion (year/month: own dimension).
_CALENDAR_UCUM: Final[dict[str, str]] = {
    "year": "_cal_yr",
    "month": "_cal_mo",
    "week": "wk",
    "day": "d",
    "hour": "h",
    "minute": "min",
    "second": "s",
    "millisecond": "ms",
}

# UCUM definite durations usable in date/time arithmetic (spec §6.6.1: "a" and "mo" are not).
UCUM_TO_CALENDAR: Final[dict[str, str]] = {
    "wk": "week",
    "d": "day",
    "h": "hour",
    "min": "minute",
    "s": "second",
    "ms": "millisecond",
}


class Quantity:
    """An immutable decimal value with a unit (UCUM code or calendar keyword)."""

    __slots__ = ("unit", "value")

    def __init__(self, value: Decimal, unit: str = "1") -> None:
        self.value = value
        self.unit = unit or "1"

    @property
    def calendar(self) -> str | None:
        """The normalised calendar keyword when the unit is one (``days`` → ``day``)."""
        return CALENDAR_UNITS.get(self.unit)

    def __str__(self) -> str:
        number = format(self.value, "f")
        if self.calendar is not None:
            return f"{number} {self.unit}"
        return f"{number} '{self.unit}'"

    def __repr__(self) -> str:
        return f"Quantity({self})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.value == other.value and self.unit == other.unit

    def __hash__(self) -> int:
        return hash((self.value, self.unit))

    def ucum(self) -> Unit | None:
        cal = self.calendar
        code = _CALENDAR_UCUM[cal] if cal is not None else self.unit
        try:
            return parse_unit(code)
        except (UnitError, ArithmeticError):
            return None

    def _common(self, other: Quantity) -> tuple[Decimal, Decimal] | None:
        """Both values in the same unit, or ``None`` when the units are not comparable."""
        if self.unit == other.unit:
            return self.value, other.value
        a, b = self.ucum(), other.ucum()
        if a is None or b is None or a.dims != b.dims or a.special or b.special:
            return None
        # Convert the other value into this unit so the result keeps a sensible precision.
        try:
            return self.value, other.value * b.factor / a.factor
        except InvalidOperation:
            return None

    def compare(self, other: Quantity) -> int | None:
        pair = self._common(other)
        if pair is None:
            return None
        a, b = pair
        return (a > b) - (a < b)

    def comparable(self, other: Quantity) -> bool:
        return self._common(other) is not None

    def equivalent(self, other: Quantity) -> bool:
        pair = self._common(other)
        return pair is not None and decimal_equivalent(*pair)

    def convert(self, unit: str) -> Quantity | None:
        """This quantity expressed in ``unit`` (used by ``toQuantity(unit)``)."""
        target = Quantity(Decimal(1), unit)
        pair = target._common(self)
        return None if pair is None else Quantity(pair[1], unit)

    def add(self, other: Quantity, sign: int) -> Quantity | None:
        pair = self._common(other)
        if pair is None:
            return None
        return Quantity(pair[0] + sign * pair[1], self.unit)

    def multiply(self, other: Quantity) -> Quantity | None:
        return self._combine(other, ".")

    def divide(self, other: Quantity) -> Quantity | None:
        if other.value == 0:
            return None
        return self._combine(other, "/")

    def _combine(self, other: Quantity, op: str) -> Quantity | None:
        if self.calendar is not None or other.calendar is not None:
            a = _CALENDAR_UCUM.get(self.calendar or "", self.unit)
            b = _CALENDAR_UCUM.get(other.calendar or "", other.unit)
        else:
            a, b = self.unit, other.unit
        value = self.value * other.value if op == "." else self.value / other.value
        if b == "1":
            return Quantity(value, a)
        if a == "1" and op == ".":
            return Quantity(value, b)
        if a == b and op == "/":
            return Quantity(value, "1")
        unit = f"{_group(a)}{op}{_group(b)}" if a != "1" else f"/{_group(b)}"
        return Quantity(value, unit)


def _group(code: str) -> str:
    return f"({code})" if "/" in code or "." in code else code
