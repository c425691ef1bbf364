"""FHIR date, dateTime and instant values as the time intervals they denote.

A FHIR date has a precision: ``2020`` means the whole year, ``2020-03-04T10:00`` one minute.
Search compares intervals, not points (R4 search.html#date), so a parsed value is the
half-open interval [low, high) it covers. Values without a zone are taken as UTC, the
server's zone (R4 allows the server to choose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

_DATE_TIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@dataclass(frozen=True, slots=True)
class Interval:
    low: datetime  # inclusive
    high: datetime  # exclusive


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


def parse_interval(value: str) -> Interval | None:
    """The interval a FHIR date/dateTime/instant covers, or None when it is not one."""
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return None
    g = match.groupdict()
    try:
        zone: tzinfo = UTC
        if g["zone"] and g["zone"] != "Z":
            sign = 1 if g["zone"][0] == "+" else -1
            hours, minutes = int(g["zone"][1:3]), int(g["zone"][4:6])
            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        low = datetime(
            int(g["year"]),
            int(g["month"] or 1),
            int(g["day"] or 1),
            int(g["hour"] or 0),
            int(g["minute"] or 0),
            int(g["second"] or 0),
            tzinfo=zone,
        )
    except ValueError:
        return None
    if g["fraction"]:
        digits = g["fraction"][1:]
        micros = int((digits + "000000")[:6])
        low = low.replace(microsecond=micros)
        high = low + timedelta(microseconds=10 ** max(0, 6 - len(digits)))
    elif g["second"] is not None:
        high = low + timedelta(seconds=1)
    elif g["minute"] is not None:
        high = low + timedelta(minutes=1)
    elif g["day"] is not None:
        high = low + timedelta(days=1)
    elif g["month"] is not None:
        high = _add_months(low, 1)
    else:
        high = low.replace(year=low.year + 1)
    return Interval(low.astimezone(UTC), high.astimezone(UTC))


def parse_instant(value: str) -> datetime | None:
    """An instant (or any dateTime) as the moment it starts; None when unparseable."""
    interval = parse_interval(value)
    return interval.low if interval else None
