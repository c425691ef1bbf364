"""Date, DateTime and Time values with partial precision (spec §2.1.20–2.1.22, N1).

A value keeps only the components that were written (``@2014-03`` has year and month). Seconds
and milliseconds form a single precision for comparison (spec §6.1.1 "=": "seconds and
milliseconds are considered a single precision using a decimal").
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from typing import Final

DATE: Final = "Date"
DATETIME: Final = "DateTime"
TIME: Final = "Time"

_DATE_RE: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_TIME_RE: Final = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")
_TZ_RE: Final = re.compile(r"Z|([+-])(\d{2}):(\d{2})")


class Temporal:
    """An immutable partial date/time. ``parts`` holds the written components in order.

    For Date/DateTime: (year, month, day, hour, minute, second, millisecond); for Time:
    (hour, minute, second, millisecond). ``tz`` is the offset in minutes, or ``None`` when no
    offset was written; ``tz_text`` keeps its spelling (``Z`` or ``+10:00``) for output.
    """

    __slots__ = ("kind", "parts", "tz", "tz_text")

    def __init__(
        self, kind: str, parts: tuple[int, ...], tz: int | None = None, tz_text: str | None = None
    ) -> None:
        self.kind = kind
        self.parts = parts
        self.tz = tz
        self.tz_text = tz_text

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, kind: str, text: str) -> Temporal | None:
        """Parse FHIR/FHIRPath text (without ``@``); ``None`` when it is not valid for ``kind``."""
        if kind == TIME:
            m = _TIME_RE.fullmatch(text.removeprefix("T"))
            if m is None:
                return None
            parts = _time_parts(m)
            return None if parts is None else cls(TIME, parts)
        m = _DATE_RE.match(text)
        if m is None:
            return None
        date_parts = tuple(int(g) for g in m.groups() if g is not None)
        if not _valid_date(date_parts):
            return None
        rest = text[m.end() :]
        if not rest:
            return cls(kind, date_parts)
        if kind == DATE or rest[0] != "T":
            return None
        rest = rest[1:]
        if not rest:  # "2015T" is a DateTime with year precision (spec §2.1.21)
            return cls(DATETIME, date_parts)
        if len(date_parts) != 3:
            return None
        tm = _TIME_RE.match(rest)
        if tm is None:
            return None
        time_parts = _time_parts(tm)
        if time_parts is None:
            return None
        tz_part = rest[tm.end() :]
        tz: int | None = None
        tz_text: str | None = None
        if tz_part:
            zm = _TZ_RE.fullmatch(tz_part)
            if zm is None:
                return None
            tz_text = tz_part
            if zm.group(1) is None:
                tz = 0
            else:
                tz = int(zm.group(2)) * 60 + int(zm.group(3))
                if zm.group(1) == "-":
                    tz = -tz
        return cls(DATETIME, date_parts + time_parts, tz, tz_text)

    # -- presentation ----------------------------------------------------------------------

    def __str__(self) -> str:
        """The value as FHIR/FHIRPath text without the leading ``@`` (used by ``toString()``)."""
        if self.kind == TIME:
            return _fmt_time(self.parts)
        p = self.parts
        out = f"{p[0]:04d}"
        if len(p) > 1:
            out += f"-{p[1]:02d}"
        if len(p) > 2:
            out += f"-{p[2]:02d}"
        if len(p) > 3:
            out += "T" + _fmt_time(p[3:])
            if self.tz_text is not None:
                out += self.tz_text
        return out

    def literal(self) -> str:
        """FHIRPath literal syntax, e.g. ``@2014-01-01T10:00:00.000+10:00`` or ``@T10:30``."""
        text = str(self)
        if self.kind == TIME:
            return "@T" + text
        if self.kind == DATETIME and len(self.parts) <= 3:
            return "@" + text + "T"
        return "@" + text

    def __repr__(self) -> str:
        return f"Temporal({self.literal()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Temporal):
            return NotImplemented
        return (self.kind, self.parts, self.tz) == (other.kind, other.parts, other.tz)

    def __hash__(self) -> int:
        return hash((self.kind, self.parts, self.tz))

    # -- semantics ---------------------------------------------------------------------------

    @property
    def precision_digits(self) -> int:
        """Digits of precision as defined by ``precision()`` (FHIRPath 2.1 "precision()"): @2014 → 4."""
        if self.kind == TIME:
            return (2, 4, 6, 9)[len(self.parts) - 1]
        return (4, 6, 8, 10, 12, 14, 17)[len(self.parts) - 1]

    def _levels(self) -> list[int]:
        """Comparable components; seconds and milliseconds merged into one level."""
        p = self.parts
        time_start = 0 if self.kind == TIME else 3
        sec_idx = time_start + 2
        if len(p) > sec_idx:
            merged = p[sec_idx] * 1000 + (p[sec_idx + 1] if len(p) > sec_idx + 1 else 0)
            return [*p[:sec_idx], merged]
        return list(p)

    def _utc(self) -> Temporal:
        """The same instant with offset 0 (only meaningful with an hour component)."""
        if self.tz is None or self.tz == 0 or self.kind != DATETIME or len(self.parts) < 4:
            return self
        p = self.parts
        f = p + (0,) * (7 - len(p))
        moment = _dt.datetime(f[0], f[1], f[2], f[3], f[4], f[5], f[6] * 1000) - _dt.timedelta(
            minutes=self.tz
        )
        shifted = (
            moment.year,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
            moment.microsecond // 1000,
        )
        return Temporal(DATETIME, shifted[: len(p)], 0, "Z")

    def compare(self, other: Temporal) -> int | None:
        """-1/0/1, or ``None`` when precision differences make the answer unknown (§6.1.1)."""
        a, b = self, other
        if a.kind == DATETIME and b.kind == DATETIME and len(a.parts) > 3 and len(b.parts) > 3:
            if (a.tz is None) != (b.tz is None):
                return None
            if a.tz is not None and a.tz != b.tz:
                a, b = a._utc(), b._utc()
        la, lb = a._levels(), b._levels()
        for x, y in zip(la, lb, strict=False):
            if x != y:
                return -1 if x < y else 1
        return 0 if len(la) == len(lb) else None

    def same_precision(self, other: Temporal) -> bool:
        return len(self._levels()) == len(other._levels())

    def add(self, amount: int, unit: str) -> Temporal:
        """Calendar arithmetic (spec §6.6.1 "+" for date/time); ``unit`` is a calendar keyword."""
        p = self.parts
        if self.kind == TIME:
            t = p + (0,) * (4 - len(p))
            base = _dt.datetime(2000, 1, 1, t[0], t[1], t[2], t[3] * 1000)
            moment = base + _delta(amount, unit)
            new = (moment.hour, moment.minute, moment.second, moment.microsecond // 1000)
            return Temporal(TIME, new[: len(p)])
        full = list(p + (1, 1)[: max(0, 3 - len(p))] + (0,) * (7 - max(3, len(p))))
        year, month, day = full[0], full[1], full[2]
        if unit in ("year", "month"):
            months = amount * 12 if unit == "year" else amount
            total = year * 12 + (month - 1) + months
            year, month = divmod(total, 12)
            month += 1
            if not 1 <= year <= 9999:
                raise OverflowError("date out of range")
            day = min(day, calendar.monthrange(year, month)[1])
            new_parts = [year, month, day, *full[3:]]
        else:
            moment = _dt.datetime(year, month, day, full[3], full[4], full[5], full[6] * 1000)
            moment += _delta(amount, unit)
            new_parts = [
                moment.year,
                moment.month,
                moment.day,
                moment.hour,
                moment.minute,
                moment.second,
                moment.microsecond // 1000,
            ]
        return Temporal(self.kind, tuple(new_parts[: len(p)]), self.tz, self.tz_text)


def _delta(amount: int, unit: str) -> _dt.timedelta:
    if unit == "week":
        return _dt.timedelta(weeks=amount)
    if unit == "day":
        return _dt.timedelta(days=amount)
    if unit == "hour":
        return _dt.timedelta(hours=amount)
    if unit == "minute":
        return _dt.timedelta(minutes=amount)
    if unit == "second":
        return _dt.timedelta(seconds=amount)
    if unit == "millisecond":
        return _dt.timedelta(milliseconds=amount)
    raise ValueError(f"not a definite duration unit: {unit}")


def _valid_date(parts: tuple[int, ...]) -> bool:
    if len(parts) > 1 and not 1 <= parts[1] <= 12:
        return False
    return not (len(parts) > 2 and not 1 <= parts[2] <= calendar.monthrange(parts[0], parts[1])[1])


def _time_parts(m: re.Match[str]) -> tuple[int, ...] | None:
    hour, minute, second, frac = m.groups()
    parts = [int(hour)]
    if minute is not None:
        parts.append(int(minute))
    if second is not None:
        parts.append(int(second))
    if frac is not None:
        parts.append(int((frac + "00")[:3]))
    if parts[0] > 23 or (len(parts) > 1 and parts[1] > 59) or (len(parts) > 2 and parts[2] > 59):
        return None
    return tuple(parts)


def _fmt_time(p: tuple[int, ...]) -> str:
    out = f"{p[0]:02d}"
    if len(p) > 1:
        out += f":{p[1]:02d}"
    if len(p) > 2:
        out += f":{p[2]:02d}"
    if len(p) > 3:
        out += f".{p[3]:03d}"
    return out


def now_datetime() -> Temporal:
    """The current moment with millisecond precision and the local offset (spec §5.9 now())."""
    moment = _dt.datetime.now().astimezone()
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    tz_text = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    parts = (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond // 1000,
    )
    return Temporal(DATETIME, parts, minutes, tz_text)


_DATE_DIGITS: Final = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6, 17: 7}
_TIME_DIGITS: Final = {2: 1, 4: 2, 6: 3, 9: 4}


def boundary(value: Temporal, digits: int | None, *, high: bool) -> Temporal | None:
    """lowBoundary()/highBoundary() of a partial date/time (FHIRPath 2.1 "Utility functions").

    Missing components are filled with their smallest (largest) value; a missing timezone
    becomes the earliest (+14:00) or latest (-12:00) offset. ``None`` for invalid precisions.
    """
    if value.kind == TIME:
        count = _TIME_DIGITS.get(9 if digits is None else digits)
        if count is None:
            return None
        low_fill: tuple[int, ...] = (0, 0, 0, 0)
        high_fill: tuple[int, ...] = (23, 59, 59, 999)
        parts = value.parts + (high_fill if high else low_fill)[len(value.parts) :]
        return Temporal(TIME, parts[:count])
    count = _DATE_DIGITS.get((17 if value.kind == DATETIME else 8) if digits is None else digits)
    if count is None:
        return None
    p = list(value.parts)
    if len(p) < 2:
        p.append(12 if high else 1)
    if len(p) < 3:
        p.append(calendar.monthrange(p[0], p[1])[1] if high else 1)
    fill = (23, 59, 59, 999) if high else (0, 0, 0, 0)
    p.extend(fill[len(p) - 3 :])
    if count <= 3:
        return Temporal(DATE, tuple(p[:count]))
    tz, tz_text = value.tz, value.tz_text
    if tz is None:
        tz, tz_text = (-720, "-12:00") if high else (840, "+14:00")
    return Temporal(DATETIME, tuple(p[:count]), tz, tz_text)
