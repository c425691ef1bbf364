"""The International Patient Summary's sections: what goes in each, and how it reads.

IPS IG (R4) Composition sections, by LOINC code (SPECS.md §8). Required: Problems 11450-4,
Allergies 48765-2, Medications 10160-0. Optional, present when the record has data: Past
illness 11348-0, Immunizations 11369-6, Results 30954-2, Vital signs 8716-3, Procedures
47519-4, Medical devices 46264-8, Social history 29762-2, Plan of care 18776-5.

A summary is not the whole record: current problems, allergies and medications; every
completed immunization; and for observations and procedures the most recent one of each
code (the last HbA1c, not every HbA1c since birth). Entered-in-error and refuted data never
appear. Each section's rows become both its XHTML narrative (R4 narrative.html: a plain table)
and the PDF rendering (share/pdf.py).

Pure: resources in, sections out.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from healthmesh.share import ips_display as show

Resource = dict[str, Any]
LOINC = "http://loinc.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # DiagnosticReport service section
EMPTY_REASON = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
            "code": "unavailable",
            "display": "Unavailable",
        }
    ]
}
_XHTML = "http://www.w3.org/1999/xhtml"
_ERROR = frozenset({"entered-in-error"})
_REFUTED = frozenset({"entered-in-error", "refuted"})


@dataclass(slots=True)
class Record:
    """The resources a summary is chosen from, and a way to follow their references."""

    patient: Resource
    by_type: dict[str, list[Resource]]
    resolve: Callable[[Any], Resource | None]  # a Reference object -> the resource, if here
    _categories: dict[str, list[Resource]] | None = None

    def observations_in(self, category: str) -> list[Resource]:
        """Observations by observation-category code, sorted out once for all sections."""
        if self._categories is None:
            self._categories = {}
            for r in self.of("Observation"):
                for concept in r.get("category") or []:
                    for coding in concept.get("coding") or [] if isinstance(concept, dict) else []:
                        if (
                            isinstance(coding, dict)
                            and coding.get("system") == OBSERVATION_CATEGORY
                        ):
                            self._categories.setdefault(str(coding.get("code")), []).append(r)
        return self._categories.get(category, [])

    def of(self, *types: str) -> list[Resource]:
        return [r for t in types for r in self.by_type.get(t, [])]


@dataclass(slots=True)
class Section:
    """One filled section: the resources it lists, in order, and its table."""

    spec: SectionSpec
    entries: list[Resource]
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.entries

    def narrative(self) -> str:
        """The section's XHTML div: a table, or a sentence saying nothing is known."""
        if self.empty:
            body = f"<p>{html.escape(self.spec.empty_text)}</p>"
        else:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in self.rows
            )
            body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        return f'<div xmlns="{_XHTML}">{body}</div>'


@dataclass(frozen=True, slots=True)
class SectionSpec:
    code: str
    display: str  # the LOINC display
    title: str
    required: bool
    empty_text: str
    columns: tuple[str, ...]
    select: Callable[[Record], list[Resource]]
    row: Callable[[Resource, Record], tuple[str, ...]]

    def fill(self, record: Record) -> Section:
        entries = self.select(record)
        rows = [self.row(r, record) for r in entries]
        return Section(self, entries, self.columns, rows)

    def code_concept(self) -> dict[str, Any]:
        return {"coding": [{"system": LOINC, "code": self.code, "display": self.display}]}


# --- selection helpers ---------------------------------------------------------------------
_EPOCH = datetime.min.replace(tzinfo=UTC)


def _newest_first(resources: Iterable[Resource], *keys: str) -> list[Resource]:
    return sorted(resources, key=lambda r: show.moment(r, *keys) or _EPOCH, reverse=True)


def _latest_per_code(resources: Iterable[Resource], code: str, *keys: str) -> list[Resource]:
    """The most recent resource of each code, newest first."""
    seen: set[str] = set()
    out = []
    for resource in _newest_first(resources, *keys):
        key = show.concept_key(resource.get(code)) or f"id:{resource.get('id')}"
        if key not in seen:
            seen.add(key)
            out.append(resource)
    return out


def _status(resource: Resource, element: str) -> str:
    return show.code_of(resource.get(element))


def _usable(resource: Resource) -> bool:
    """Not entered in error and not refuted, whichever status element the type uses."""
    return (
        resource.get("status") not in _ERROR
        and _status(resource, "verificationStatus") not in _REFUTED
    )


def _in_category(resource: Resource, system: str, *codes: str) -> bool:
    return show.has_coding(resource.get("category"), system, frozenset(codes))


# --- the sections ----------------------------------------------------------------------------
_CONDITION_DATES = ("onsetDateTime", "onsetPeriod", "recordedDate", "abatementDateTime")
_ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
_PAST_CONDITION = frozenset({"inactive", "remission", "resolved"})


def _conditions(record: Record, statuses: frozenset[str]) -> list[Resource]:
    chosen = [
        r for r in record.of("Condition") if _usable(r) and _status(r, "clinicalStatus") in statuses
    ]
    return _newest_first(chosen, *_CONDITION_DATES)


def _condition_row(r: Resource, record: Record) -> tuple[str, ...]:
    return (
        show.concept(r.get("code")),
        _status(r, "clinicalStatus"),
        show.when(r, "onsetDateTime", "onsetPeriod", "onsetString"),
        show.when(r, "abatementDateTime", "abatementPeriod", "abatementString"),
    )


def _allergies(record: Record) -> list[Resource]:
    chosen = [
        r
        for r in record.of("AllergyIntolerance")
        if _usable(r) and _status(r, "clinicalStatus") not in ("inactive", "resolved")
    ]
    return _newest_first(chosen, "onsetDateTime", "recordedDate")


def _allergy_row(r: Resource, record: Record) -> tuple[str, ...]:
    reactions = [
        show.first_concept(reaction.get("manifestation"))
        for reaction in r.get("reaction") or []
        if isinstance(reaction, dict)
    ]
    category = ", ".join(c for c in r.get("category") or [] if isinstance(c, str))
    return (
        show.concept(r.get("code")),
        category,
        str(r.get("criticality", "")),
        "; ".join(x for x in reactions if x),
        _status(r, "clinicalStatus"),
    )


_CURRENT_STATEMENT = frozenset({"active", "intended", "on-hold"})
_CURRENT_REQUEST = frozenset({"active", "on-hold"})


def _medications(record: Record) -> list[Resource]:
    chosen = [
        r for r in record.of("MedicationStatement") if r.get("status") in _CURRENT_STATEMENT
    ] + [r for r in record.of("MedicationRequest") if r.get("status") in _CURRENT_REQUEST]
    return _newest_first(chosen, "effectiveDateTime", "effectivePeriod", "authoredOn")


def medication_name(r: Resource, record: Record) -> str:
    """medication[x]: the concept, or the referenced Medication's code."""
    if "medicationCodeableConcept" in r:
        return show.concept(r["medicationCodeableConcept"])
    reference = r.get("medicationReference")
    medication = record.resolve(reference)
    if medication is not None:
        return show.concept(medication.get("code"))
    return str(reference.get("display", "")) if isinstance(reference, dict) else ""


def _dosage(r: Resource) -> str:
    key = "dosage" if r.get("resourceType") == "MedicationStatement" else "dosageInstruction"
    texts = [d.get("text") for d in r.get(key) or [] if isinstance(d, dict)]
    return "; ".join(t for t in texts if isinstance(t, str))


def _medication_row(r: Resource, record: Record) -> tuple[str, ...]:
    return (
        medication_name(r, record),
        str(r.get("status", "")),
        _dosage(r),
        show.when(r, "effectiveDateTime", "effectivePeriod", "authoredOn"),
    )


def _immunizations(record: Record) -> list[Resource]:
    chosen = [r for r in record.of("Immunization") if r.get("status") == "completed"]
    return _newest_first(chosen, "occurrenceDateTime", "recorded")


def _immunization_row(r: Resource, record: Record) -> tuple[str, ...]:
    return (
        show.concept(r.get("vaccineCode")),
        show.when(r, "occurrenceDateTime", "occurrenceString"),
        str(r.get("status", "")),
    )


_OBSERVATION_DATES = ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
_FINAL_ENOUGH = frozenset({"registered", "preliminary", "final", "amended", "corrected"})


def _observations(record: Record, category: str) -> list[Resource]:
    chosen = [r for r in record.observations_in(category) if r.get("status") in _FINAL_ENOUGH]
    return _latest_per_code(chosen, "code", *_OBSERVATION_DATES)


def _results(record: Record) -> list[Resource]:
    """Each lab report's latest instance with the results it reports, and each lab test's
    latest result (a report's results are part of it, so they come along)."""
    reports = _latest_per_code(
        [
            r
            for r in record.of("DiagnosticReport")
            if r.get("status") not in ("entered-in-error", "cancelled")
            and (
                _in_category(r, V2_0074, "LAB")
                or _in_category(r, OBSERVATION_CATEGORY, "laboratory")
            )
        ],
        "code",
        *_OBSERVATION_DATES,
    )
    out: list[Resource] = []
    seen: set[int] = set()

    def add(resource: Resource) -> None:
        if id(resource) not in seen:
            seen.add(id(resource))
            out.append(resource)

    for report in reports:
        add(report)
        for reference in report.get("result") or []:
            found = record.resolve(reference)
            if found is not None and found.get("resourceType") == "Observation":
                add(found)
    for observation in _observations(record, "laboratory"):
        add(observation)
    return out


def _observation_row(r: Resource, record: Record) -> tuple[str, ...]:
    if r.get("resourceType") == "DiagnosticReport":
        shown = str(r.get("conclusion", "")) or f"report of {len(r.get('result') or [])} results"
        return (show.concept(r.get("code")), shown, show.when(r, *_OBSERVATION_DATES))
    return (
        show.concept(r.get("code")),
        show.observation_value(r),
        show.when(r, *_OBSERVATION_DATES),
    )


def _procedures(record: Record) -> list[Resource]:
    chosen = [r for r in record.of("Procedure") if r.get("status") in ("completed", "in-progress")]
    return _latest_per_code(chosen, "code", "performedDateTime", "performedPeriod")


def _procedure_row(r: Resource, record: Record) -> tuple[str, ...]:
    return (
        show.concept(r.get("code")),
        show.when(r, "performedDateTime", "performedPeriod", "performedString"),
        str(r.get("status", "")),
    )


def _devices(record: Record) -> list[Resource]:
    """DeviceUseStatements (the IPS's device entry) and the Devices assigned to the patient
    (what US Core and Synthea store); a statement's Device comes with it."""
    statements = [
        r
        for r in record.of("DeviceUseStatement")
        if r.get("status") not in ("entered-in-error", "not-done")
    ]
    devices = [
        r for r in record.of("Device") if r.get("status") not in ("entered-in-error", "inactive")
    ]
    for statement in statements:
        used = record.resolve(statement.get("device"))
        if used is not None and used.get("resourceType") == "Device" and used not in devices:
            devices.append(used)
    return statements + devices


def _device_name(device: Resource) -> str:
    for name in device.get("deviceName") or []:
        if isinstance(name, dict) and isinstance(name.get("name"), str):
            return str(name["name"])
    return show.concept(device.get("type"))


def _device_row(r: Resource, record: Record) -> tuple[str, ...]:
    if r.get("resourceType") == "DeviceUseStatement":
        device = record.resolve(r.get("device"))
        name = _device_name(device) if device is not None else ""
        return (name, str(r.get("status", "")), show.when(r, "timingDateTime", "timingPeriod"))
    return (_device_name(r), str(r.get("status", "")), show.when(r, "manufactureDate"))


def _care_plans(record: Record) -> list[Resource]:
    chosen = [r for r in record.of("CarePlan") if r.get("status") in ("active", "on-hold")]
    return _newest_first(chosen, "period", "created")


def _care_plan_row(r: Resource, record: Record) -> tuple[str, ...]:
    name = str(r.get("title", "")) or show.first_concept(r.get("category"))
    activities = [
        show.concept((a.get("detail") or {}).get("code"))
        for a in r.get("activity") or []
        if isinstance(a, dict)
    ]
    return (name, "; ".join(a for a in activities if a), show.when(r, "period"))


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec(
        "11450-4",
        "Problem list - Reported",
        "Active Problems",
        True,
        "No information is known about the patient's current problems.",
        ("Problem", "Status", "Onset", "Abatement"),
        lambda rec: _conditions(rec, _ACTIVE_CONDITION),
        _condition_row,
    ),
    SectionSpec(
        "48765-2",
        "Allergies and adverse reactions Document",
        "Allergies and Intolerances",
        True,
        "No information is known about the patient's allergies and intolerances.",
        ("Allergen", "Category", "Criticality", "Reaction", "Status"),
        _allergies,
        _allergy_row,
    ),
    SectionSpec(
        "10160-0",
        "History of Medication use Narrative",
        "Medication Summary",
        True,
        "No information is known about the patient's current medications.",
        ("Medication", "Status", "Dosage", "Date"),
        _medications,
        _medication_row,
    ),
    SectionSpec(
        "11348-0",
        "History of Past illness Narrative",
        "History of Past Illness",
        False,
        "",
        ("Condition", "Status", "Onset", "Abatement"),
        lambda rec: _conditions(rec, _PAST_CONDITION),
        _condition_row,
    ),
    SectionSpec(
        "11369-6",
        "History of Immunization Narrative",
        "Immunizations",
        False,
        "",
        ("Vaccine", "Date", "Status"),
        _immunizations,
        _immunization_row,
    ),
    SectionSpec(
        "30954-2",
        "Relevant diagnostic tests/laboratory data Narrative",
        "Results",
        False,
        "",
        ("Test", "Result", "Date"),
        _results,
        _observation_row,
    ),
    SectionSpec(
        "8716-3",
        "Vital signs",
        "Vital Signs",
        False,
        "",
        ("Vital sign", "Value", "Date"),
        lambda rec: _observations(rec, "vital-signs"),
        _observation_row,
    ),
    SectionSpec(
        "47519-4",
        "History of Procedures Document",
        "History of Procedures",
        False,
        "",
        ("Procedure", "Date", "Status"),
        _procedures,
        _procedure_row,
    ),
    SectionSpec(
        "46264-8",
        "History of medical device use",
        "Medical Devices",
        False,
        "",
        ("Device", "Status", "Date"),
        _devices,
        _device_row,
    ),
    SectionSpec(
        "29762-2",
        "Social history Narrative",
        "Social History",
        False,
        "",
        ("Observation", "Value", "Date"),
        lambda rec: _observations(rec, "social-history"),
        _observation_row,
    ),
    SectionSpec(
        "18776-5",
        "Plan of care note",
        "Plan of Care",
        False,
        "",
        ("Plan", "Activities", "Period"),
        _care_plans,
        _care_plan_row,
    ),
)
REQUIRED_CODES = frozenset(s.code for s in SECTIONS if s.required)
# The types a summary is chosen from (section content) and may refer to (reference data).
SECTION_TYPES = (
    "AllergyIntolerance",
    "CarePlan",
    "Condition",
    "Device",
    "DeviceUseStatement",
    "DiagnosticReport",
    "Immunization",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
)


SECTION_CODES = frozenset(s.code for s in SECTIONS)


def fill_sections(record: Record, only: Collection[str] | None = None) -> list[Section]:
    """Every required section, and each optional one that has something to say.

    ``only`` (LOINC codes): just those sections, as a patient chooses what to share; a
    required one left out is left out (a PatientSharedBundle has no Composition to need it).
    """
    specs = SECTIONS if only is None else [s for s in SECTIONS if s.code in only]
    filled = [spec.fill(record) for spec in specs]
    return [s for s in filled if s.spec.required or not s.empty]
