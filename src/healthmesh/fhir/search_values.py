"""Search parameter values as the spec defines them (R4 search.html), parsed and checked.

Malformed values raise InvalidRequest naming the parameter, so a client learns which part of
its query is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from healthmesh.fhir.dates import Interval, parse_interval
from healthmesh.fhir.errors import InvalidRequest

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    interval: Interval


@dataclass(frozen=True, slots=True)
class TokenValue:
    """``code``, ``system|code``, ``|code`` (no system) or ``system|`` (any code)."""

    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on ``separator`` unless escaped as ``\\separator`` (R4 search.html#escaping).

    Only the separator's own escape is undone, so ``\\$`` survives a split on commas for the
    composite split on dollars that follows.
    """
    if "\\" not in value:  # nothing escaped (nearly every value): str.split says the same
        return value.split(separator)
    parts, current, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] == separator:
            current.append(separator)
            i += 2
            continue
        if ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def split_or(value: str) -> list[str]:
    """Comma means OR; ``\\,`` is a literal comma."""
    return split_escaped(value, ",")


def parse_date(param: str, value: str) -> DateValue:
    prefix, rest = "eq", value
    if len(value) > 2 and value[:2].isalpha():
        prefix, rest = value[:2], value[2:]
        if prefix not in PREFIXES:
            raise InvalidRequest(
                f"Unknown prefix '{prefix}' in {param}={value}; expected one of {', '.join(PREFIXES)}",
                expression=param,
            )
    interval = parse_interval(rest)
    if interval is None:
        raise InvalidRequest(
            f"'{rest}' in {param} is not a FHIR date, dateTime or instant", expression=param
        )
    return DateValue(prefix, interval)


def parse_token(param: str, value: str) -> TokenValue:
    if value == "":
        raise InvalidRequest(f"Empty value for {param}", expression=param)
    if "|" not in value:
        return TokenValue(None, value)
    system, _, code = value.partition("|")
    if system == "" and code == "":
        raise InvalidRequest(
            f"'{value}' in {param} names neither system nor code", expression=param
        )
    return TokenValue(system, code or None)
