"""The Kill the Clipboard PatientSharedBundle (CMS, draft for July 2026; SPECS.md §6).

What a patient's app hands a clinic at check-in: a Bundle of type ``collection`` with a
timestamp, exactly one Patient (name, birthDate, gender) and at least one more entry, every
fullUrl ``urn:uuid:`` and every reference internal. Its content:

- the patient summary's resources (share/ips.py: problems, allergies, medications,
  immunizations, results …, and the reference data they point at), without the Composition;
- the insurance card: each active Coverage of which the patient is the beneficiary, profiled
  as CARIN ``C4DIC-Coverage``, with its payer;
- patient-provided PDFs as DocumentReference (status current, category patient-shared,
  subject = author = the Patient, ``meta.security`` PATAST, inline base64, LOINC 51855-5);
- a PDF rendering of the shared data (the same DocumentReference shape, LOINC 60591-5).

Python: :func:`shared_bundle` (the share-link API calls it). HTTP: ``GET|POST
Patient/[id]/$shared-bundle`` (docs/patient-summary.md).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from healthmesh.fhir.dates import parse_instant
from healthmesh.fhir.errors import InvalidRequest, InvalidResource, Issue
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.share import ips_display as show
from healthmesh.share import pdf
from healthmesh.share.ips import PatientRecord, choose, read_record
from healthmesh.share.ips_refs import internalise, local_key
from healthmesh.share.ips_sections import Section
from healthmesh.store.repository import Session
from healthmesh.store.rows import format_instant, now

Resource = dict[str, Any]
LOINC = "http://loinc.org"
C4DIC_COVERAGE = "http://hl7.org/fhir/us/insurance-card/StructureDefinition/C4DIC-Coverage"
PATIENT_SHARED = {
    "system": "https://cms.gov/fhir/CodeSystem/patient-shared-category",
    "code": "patient-shared",
    "display": "Patient shared",
}
# v3 ObservationValue PATAST "patient asserted": the patient, not a clinician, vouches for it.
PATAST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "PATAST",
    "display": "patient asserted",
}
PATIENT_STORY = ("51855-5", "Patient Note")
RENDERING = ("60591-5", "Patient summary Document")
PDF = "application/pdf"
DEFAULT_TITLE = "Patient-provided document"


@dataclass(frozen=True, slots=True)
class PatientDocument:
    """A PDF the patient adds to what they share (a letter, a scanned record)."""

    data: bytes
    title: str = DEFAULT_TITLE

    def __post_init__(self) -> None:
        if not self.data.startswith(b"%PDF-"):
            raise InvalidRequest("A patient-provided document must be a PDF (%PDF-…)")


def _urn(base: str, key: str) -> str:
    """A stable ``urn:uuid:`` for a stored resource: the same resource, the same fullUrl."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{base}/{key}')}"


def _coverages(record: PatientRecord) -> list[Resource]:
    """The patient's active insurance, as CARIN C4DIC-Coverage (beneficiary = the patient)."""
    out = []
    for coverage in record.of_type("Coverage"):
        if coverage.get("status") != "active":
            continue
        if record.key(coverage.get("beneficiary")) != record.patient_key:
            continue
        meta = dict(coverage.get("meta") or {})
        profiles = [p for p in meta.get("profile") or [] if p != C4DIC_COVERAGE]
        meta["profile"] = [C4DIC_COVERAGE, *profiles]
        out.append({**coverage, "meta": meta})
    return out


def _check_patient(patient: Resource) -> None:
    """The profile needs the Patient's name, birthDate and gender; say which are missing."""
    missing = [e for e in ("name", "birthDate", "gender") if not patient.get(e)]
    if missing:
        raise InvalidResource(
            [
                Issue(
                    code="required",
                    diagnostics=f"A PatientSharedBundle needs the Patient's {element};"
                    f" Patient/{patient.get('id')} has none",
                    expression=f"Patient.{element}",
                )
                for element in missing
            ],
            status=422,
        )


def document_reference(
    patient_urn: str,
    data: bytes,
    *,
    title: str,
    loinc: tuple[str, str],
    stamp: str,
) -> Resource:
    """A patient-shared DocumentReference carrying ``data`` (a PDF) inline."""
    code, display = loinc
    return {
        "resourceType": "DocumentReference",
        "id": str(uuid.uuid4()),
        "meta": {"security": [PATAST]},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "category": [{"coding": [PATIENT_SHARED]}],
        "subject": {"reference": patient_urn},
        "date": stamp,
        "author": [{"reference": patient_urn}],
        "description": title,
        "content": [
            {
                "attachment": {
                    "contentType": PDF,
                    "data": base64.b64encode(data).decode("ascii"),
                    "title": title,
                    "creation": stamp,
                }
            }
        ],
    }


def _gender(patient: Resource) -> str:
    return str(patient.get("gender", ""))


def _coverage_line(coverage: Resource, carried: dict[str, Resource], base: str) -> str:
    payers = []
    for payor in coverage.get("payor") or []:
        key = local_key(payor.get("reference", ""), base) if isinstance(payor, dict) else None
        target = carried.get(key) if key else None
        name = (target or {}).get("name") or (
            payor.get("display") if isinstance(payor, dict) else ""
        )
        if name:
            payers.append(str(name))
    member = coverage.get("subscriberId") or next(
        (i.get("value") for i in coverage.get("identifier") or [] if isinstance(i, dict)), ""
    )
    plan = show.concept(coverage.get("type"))
    parts = [", ".join(payers) or "Insurer not stated"]
    if plan:
        parts.append(plan)
    if member:
        parts.append(f"member ID {member}")
    return " - ".join(parts)


def rendering(
    patient: Resource,
    sections: Sequence[Section],
    coverages: Sequence[Resource],
    carried: dict[str, Resource],
    *,
    base: str,
    stamp: str,
    documents: Sequence[PatientDocument] = (),
) -> bytes:
    """The PDF a person reads: who, their insurance, then each section's table."""
    facts = [
        ("Name", show.human_name(patient.get("name")) or "(not recorded)"),
        ("Date of birth", show.date(patient.get("birthDate")) or "(not recorded)"),
        ("Gender", _gender(patient) or "(not recorded)"),
    ]
    facts += [("Insurance", _coverage_line(c, carried, base)) for c in coverages]
    facts += [("Attached", d.title) for d in documents]
    tables = [
        pdf.PdfTable(
            s.spec.title,
            s.columns,
            s.rows,
            empty_text=s.spec.empty_text or "No information.",
        )
        for s in sections
    ]
    return pdf.render(
        pdf.PdfDocument(
            title="Patient Summary",
            subtitle=f"Shared by the patient, {stamp[:10]}. Generated by HealthMesh from {base}.",
            facts=facts,
            tables=tables,
            created=parse_instant(stamp),
        )
    )


def compose_shared_bundle(
    record: PatientRecord,
    *,
    documents: Sequence[PatientDocument] = (),
    with_rendering: bool = True,
    sections: Collection[str] | None = None,
    insurance: bool = True,
) -> Resource:
    """The PatientSharedBundle of ``record`` (pure, given the clock and random ids).

    ``sections`` (LOINC codes, default all) and ``insurance`` are what the patient chose to
    share; the rendering shows exactly what the Bundle carries.
    """
    _check_patient(record.patient)
    coverages = _coverages(record) if insurance else []
    filled, carried = choose(record, extra=coverages, only=sections)
    base = record.base
    urns = {key: _urn(base, key) for key in carried}
    patient_urn = urns[record.patient_key]

    def internal(reference: str) -> str | None:
        key = local_key(reference, base)
        return urns.get(key) if key is not None else None

    stamp = format_instant(now())
    entries = [
        {"fullUrl": urns[key], "resource": internalise(resource, internal)}
        for key, resource in carried.items()
    ]
    for document in documents:
        resource = document_reference(
            patient_urn, document.data, title=document.title, loinc=PATIENT_STORY, stamp=stamp
        )
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    if with_rendering:
        shown_coverages = [carried[f"Coverage/{c['id']}"] for c in coverages]
        data = rendering(
            carried[record.patient_key],
            filled,
            shown_coverages,
            carried,
            base=base,
            stamp=stamp,
            documents=documents,
        )
        resource = document_reference(
            patient_urn, data, title="Patient summary (PDF rendering)", loinc=RENDERING, stamp=stamp
        )
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    if len(entries) < 2:
        raise InvalidResource(
            [
                Issue(
                    code="required",
                    diagnostics="A PatientSharedBundle needs at least one entry besides the"
                    " Patient, and this record shares nothing else",
                    expression="Bundle.entry",
                )
            ],
            status=422,
        )
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": stamp,
        "entry": entries,
    }


async def shared_bundle(
    session: Session,
    patient_id: str,
    *,
    base: str,
    documents: Sequence[PatientDocument] = (),
    with_rendering: bool = True,
    sections: Collection[str] | None = None,
    insurance: bool = True,
) -> Resource:
    """The PatientSharedBundle of ``patient_id``'s record, as ``session``'s caller may see it.

    NotFound when the patient is not the caller's to see (as ``$summary``).
    """
    record = await read_record(session, patient_id, base=base, extra_types=("Coverage",))
    return compose_shared_bundle(
        record,
        documents=documents,
        with_rendering=with_rendering,
        sections=sections,
        insurance=insurance,
    )


# --- the operation -----------------------------------------------------------------------
def _boolean(value: str, where: str) -> bool:
    if value not in ("true", "false"):
        raise InvalidRequest(f"{where} must be true or false, not '{value}'", expression=where)
    return value == "true"


def _document(parameter: dict[str, Any], where: str) -> PatientDocument:
    attachment = parameter.get("valueAttachment")
    if not isinstance(attachment, dict):
        raise InvalidRequest("A document parameter carries a valueAttachment", expression=where)
    if attachment.get("contentType") != PDF:
        raise InvalidRequest(
            f"A patient-provided document must be {PDF}",
            expression=f"{where}.valueAttachment.contentType",
        )
    raw = attachment.get("data")
    try:
        data = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data.startswith(b"%PDF-"):
        raise InvalidRequest(
            "The attachment's data is not a base64-encoded PDF",
            expression=f"{where}.valueAttachment.data",
        )
    title = attachment.get("title")
    return PatientDocument(data, title if isinstance(title, str) and title else DEFAULT_TITLE)


def _parameters(request: FhirRequest) -> tuple[list[PatientDocument], bool]:
    with_rendering = True
    if (value := request.param("rendering")) is not None:
        with_rendering = _boolean(value, "rendering")
    documents: list[PatientDocument] = []
    body = request.body
    if body is None:
        return documents, with_rendering
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$shared-bundle takes a Parameters resource in the body")
    for i, parameter in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name == "document":
            documents.append(_document(parameter, where))
        elif name == "rendering":
            flag = parameter.get("valueBoolean")
            if not isinstance(flag, bool):
                raise InvalidRequest("rendering takes a valueBoolean", expression=where)
            with_rendering = flag
        else:
            raise InvalidRequest(
                f"Unknown parameter '{name}'; $shared-bundle takes document and rendering",
                expression=f"{where}.name",
            )
    return documents, with_rendering


async def shared_bundle_operation(
    session: Session, request: FhirRequest, patient_id: str
) -> FhirResult:
    """``GET|POST Patient/[id]/$shared-bundle``."""
    documents, with_rendering = _parameters(request)
    body = await shared_bundle(
        session, patient_id, base=request.base, documents=documents, with_rendering=with_rendering
    )
    return FhirResult(status=200, body=body)
