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


def split_or(value: str) -> list[str]:
    """Comma means OR; ``\\,`` is a literal comma (R4 search.html#escaping)."""
    parts, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


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
