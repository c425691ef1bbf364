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
    # The interval's ends in UTC. At the edges of Python's range (year 1 with an offset east
    # of UTC, anything ending after year 9999) they are clamped to the range: R4 allows
    # dates from 0001 to 9999, and an error here would refuse a valid resource.
    end = _end(low, g)
    return Interval(_utc(low), _MAX if end is None else _utc(end))


_MIN = datetime.min.replace(tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)


def _end(low: datetime, g: dict[str, str | None]) -> datetime | None:
    """Where the value's precision ends (exclusive); None when that is past year 9999."""
    try:
        if g["fraction"]:
            return low + timedelta(microseconds=10 ** max(0, 6 - len(g["fraction"]) + 1))
        if g["second"] is not None:
            return low + timedelta(seconds=1)
        if g["minute"] is not None:
            return low + timedelta(minutes=1)
        if g["day"] is not None:
            return low + timedelta(days=1)
        if g["month"] is not None:
            return _add_months(low, 1)
        return low.replace(year=low.year + 1)
    except (OverflowError, ValueError):
        return None


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        # Only year 1 east of UTC or year 9999 west of it fall outside.
        return _MIN if moment.year == 1 else _MAX


def parse_instant(value: str) -> datetime | None:
    """An instant (or any dateTime) as the moment it starts; None when unparseable."""
    interval = parse_interval(value)
    return interval.low if interval else None
