"""FHIR values as short human-readable text, for section narratives and the PDF rendering.

Pure functions over parsed JSON: no structure definitions, no I/O. Missing values read as an
empty string, so a table cell is blank rather than "None".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from healthmesh.fhir.dates import parse_instant


def concept(value: Any) -> str:
    """A CodeableConcept (or Coding) as text: its text, else a display, else system|code."""
    if not isinstance(value, dict):
        return ""
    if isinstance(value.get("text"), str) and value["text"]:
        return str(value["text"])
    codings = value.get("coding") if "coding" in value else [value]
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and coding.get("code"):
            return str(coding["code"])
    return ""


def first_concept(values: Any) -> str:
    """The first of a list of CodeableConcepts that reads as something."""
    for value in values if isinstance(values, list) else [values]:
        text = concept(value)
        if text:
            return text
    return ""


def code_of(value: Any) -> str:
    """The first coded value of a CodeableConcept, e.g. ``active``; '' when uncoded."""
    if isinstance(value, dict):
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return ""


def concept_key(value: Any) -> str:
    """A grouping key for 'the same test / procedure': the first system|code, else the text."""
    if isinstance(value, dict):
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                return f"{coding.get('system', '')}|{coding['code']}"
        if isinstance(value.get("text"), str):
            return f"text:{value['text'].strip().lower()}"
    return ""


def has_coding(values: Any, system: str | None, codes: frozenset[str]) -> bool:
    """Whether any CodeableConcept in ``values`` has a coding in ``codes`` (of ``system``)."""
    for value in values if isinstance(values, list) else [values]:
        if not isinstance(value, dict):
            continue
        for coding in value.get("coding") or []:
            if (
                isinstance(coding, dict)
                and coding.get("code") in codes
                and (system is None or coding.get("system") == system)
            ):
                return True
    return False


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)


def quantity(value: Any) -> str:
    if not isinstance(value, dict) or "value" not in value:
        return ""
    unit = value.get("unit") or value.get("code") or ""
    comparator = value.get("comparator", "")
    return f"{comparator}{_number(value['value'])} {unit}".strip()


def date(value: Any) -> str:
    """A FHIR date/dateTime as its calendar date (``2020-03-04``): enough for a summary."""
    return value[:10] if isinstance(value, str) else ""


def period(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    start, end = date(value.get("start")), date(value.get("end"))
    if start and end:
        return start if start == end else f"{start} to {end}"
    return f"from {start}" if start else (f"until {end}" if end else "")


def value_x(resource: dict[str, Any]) -> str:
    """An Observation's (or component's) value[x] as text."""
    for key, render in _VALUES:
        if key in resource:
            return str(render(resource[key]))
    return ""


_VALUES: tuple[tuple[str, Any], ...] = (
    ("valueQuantity", quantity),
    ("valueCodeableConcept", concept),
    ("valueString", str),
    ("valueBoolean", lambda v: "yes" if v else "no"),
    ("valueInteger", str),
    ("valueDateTime", date),
    ("valuePeriod", period),
    (
        "valueRange",
        lambda v: (
            f"{quantity(v.get('low'))} - {quantity(v.get('high'))}" if isinstance(v, dict) else ""
        ),
    ),
    (
        "valueRatio",
        lambda v: (
            f"{quantity(v.get('numerator'))} / {quantity(v.get('denominator'))}"
            if isinstance(v, dict)
            else ""
        ),
    ),
)


def observation_value(observation: dict[str, Any]) -> str:
    """The value, or the components' values (blood pressure: 'Systolic 120 mm[Hg]; …')."""
    text = value_x(observation)
    if text:
        return text
    parts = []
    for component in observation.get("component") or []:
        if isinstance(component, dict):
            shown = value_x(component)
            if shown:
                parts.append(f"{concept(component.get('code'))} {shown}".strip())
    if parts:
        return "; ".join(parts)
    reason = observation.get("dataAbsentReason")
    return f"({concept(reason)})" if reason else ""


def when(resource: dict[str, Any], *keys: str) -> str:
    """The first of the named date-ish elements present, as text."""
    for key in keys:
        value = resource.get(key)
        if isinstance(value, str):
            return date(value)
        if isinstance(value, dict):
            shown = period(value)
            if shown:
                return shown
    return ""


def moment(resource: dict[str, Any], *keys: str) -> datetime | None:
    """The first of the named dateTime / Period elements as a moment, for ordering."""
    for key in keys:
        value = resource.get(key)
        if isinstance(value, dict):
            value = value.get("start") or value.get("end")
        if isinstance(value, str):
            parsed = _moment(value)
            if parsed is not None:
                return parsed
    return None


def _moment(value: str) -> datetime | None:
    # Full dates and dateTimes (nearly all stored values) through the C parser; partial
    # dates (2020, 2020-03) and odd forms through the FHIR one. No zone: UTC (fhir/dates.py).
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return parse_instant(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def human_name(names: Any) -> str:
    """The first HumanName (``official`` preferred) as 'Given Family'."""
    candidates = [n for n in names if isinstance(n, dict)] if isinstance(names, list) else []
    candidates.sort(key=lambda n: 0 if n.get("use") == "official" else 1)
    for name in candidates:
        if isinstance(name.get("text"), str) and name["text"]:
            return str(name["text"])
        given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        full = f"{given} {family}".strip()
        if full:
            return full
    return ""
