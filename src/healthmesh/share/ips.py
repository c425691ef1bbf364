"""``Patient/[id]/$summary``: the International Patient Summary as a FHIR document.

IPS IG (R4) and SPECS.md §8: a Bundle of type ``document`` (identifier, timestamp) whose first
entry is a Composition (status final, type LOINC 60591-5, subject, date, author, title,
sections), then the Patient, then what the sections list, then the reference data they
point at (Medication, Practitioner, Organization …). Which resources each section lists is
share/ips_sections.py's business.

The record is read with the same access condition as ``$everything`` (``session.visible``),
by a query that asks only for what a summary can use (store/search/summary_query.py): a
patient token sees its own summary, limited to what its scopes allow, and another patient's
is a 404. One SQL statement for the Patient, one for everything else, whatever the size of
the record.

Every reference in the document resolves inside it (R4 bundle.html#references): stored
resources keep their RESTful fullUrl ``[base]/Type/id``, so their relative references
resolve against it; the generated Composition and its author (a Device naming this software)
have ``urn:uuid:`` fullUrls and refer by absolute URL. References to what the summary does not
carry are reduced to their display (share/ips_refs.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import sql

from healthmesh import __version__
from healthmesh.fhir.errors import Forbidden, InvalidRequest, NotFound, NotSupported
from healthmesh.interactions.context import FhirRequest, FhirResult, check_id
from healthmesh.share import ips_display as show
from healthmesh.share.ips_refs import internalise, iter_reference_objects, local_key
from healthmesh.share.ips_sections import (
    EMPTY_REASON,
    SECTION_TYPES,
    Record,
    Section,
    fill_sections,
)
from healthmesh.store.repository import Session
from healthmesh.store.rows import format_instant, now
from healthmesh.store.search.summary_query import summary_record_query

Resource = dict[str, Any]
IPS_BUNDLE_PROFILE = "http://hl7.org/fhir/uv/ips/StructureDefinition/Bundle-uv-ips"
SUMMARY_OPERATION = "http://hl7.org/fhir/uv/ips/OperationDefinition/summary"
# Resources no patient owns that section entries refer to; carried so the references resolve.
REFERENCE_TYPES = (
    "Location",
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Substance",
)
# A record larger than this is refused rather than summarised in one response.
MAX_RESOURCES = 200_000
_ABOUT = ("subject", "patient", "beneficiary")
_AUTHOR_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://healthmesh.invalid/ips-generator"))


@dataclass(slots=True)
class PatientRecord:
    """What a summary is chosen from: the Patient and its resources by ``Type/id``."""

    patient: Resource
    resources: dict[str, Resource]
    base: str

    @property
    def patient_key(self) -> str:
        return f"Patient/{self.patient['id']}"

    def key(self, reference: Any) -> str | None:
        if isinstance(reference, dict):
            reference = reference.get("reference")
        return local_key(reference, self.base) if isinstance(reference, str) else None

    def resolve(self, reference: Any) -> Resource | None:
        key = self.key(reference)
        if key is None:
            return None
        if key == self.patient_key:
            return self.patient
        return self.resources.get(key)

    def resolve_own(self, reference: Any) -> Resource | None:
        """As :meth:`resolve`, but never a resource about another patient (a report's result
        may be in this compartment only because this patient performed it)."""
        target = self.resolve(reference)
        if target is None:
            return None
        about = next((e for e in _ABOUT if e in target), None)
        if about is not None and self.key(target[about]) != self.patient_key:
            return None
        return target

    def of_type(self, *types: str) -> list[Resource]:
        return [r for k, r in self.resources.items() if k.partition("/")[0] in types]

    def is_about_patient(self, resource: Resource) -> bool:
        """Whether the patient is what ``resource`` is about (its subject, patient or
        beneficiary), not merely named in it: the Patient compartment also holds, say,
        another patient's Condition that this patient asserted, which is no problem of theirs.
        """
        for element in _ABOUT:
            if element in resource:
                return self.key(resource[element]) == self.patient_key
        return False


async def read_record(
    session: Session, patient_id: str, *, base: str, extra_types: Iterable[str] = ()
) -> PatientRecord:
    """The patient and the parts of their record a summary may use, as the caller may see them.

    NotFound when the patient is unknown, deleted, or not the caller's to see; Forbidden when
    the token cannot read Patient records at all (as ``$everything``).
    """
    check_id(patient_id)
    if session.visibility is not None and not session.visibility.covers("Patient", "r"):
        raise Forbidden("This token's scopes do not permit reading Patient records")
    current = await session.readable("Patient", patient_id)
    if current is None or current.deleted or current.content is None:
        raise NotFound(f"Patient/{patient_id} is not known")
    types = sorted({*SECTION_TYPES, *extra_types} - {"Patient"})
    rows = await session.fetch(
        summary_record_query(
            patient_id,
            types=types,
            reference_types=REFERENCE_TYPES,
            limit=MAX_RESOURCES + 1,
            visible=session.visible("s", sql.Identifier("r"), None, record_of=patient_id),
        )
    )
    if len(rows) > MAX_RESOURCES:
        raise NotSupported(
            f"Patient/{patient_id} has more than {MAX_RESOURCES} resources to summarise"
        )
    resources = {f"{t}/{i}": orjson.loads(content) for t, i, content in rows}
    return PatientRecord(orjson.loads(current.content), resources, base)


@dataclass(slots=True)
class Summary:
    """A composed summary: the document Bundle and the parts the PDF and shared bundle use."""

    bundle: Resource
    patient: Resource
    sections: list[Section]
    carried: dict[str, Resource]  # Type/id -> the stored resources in the document, as carried


def _closure(record: PatientRecord, chosen: dict[str, Resource]) -> None:
    """Add the reference data the chosen resources point at (and what that points at)."""
    pending = list(chosen.values())
    while pending:
        resource = pending.pop()
        for ref in iter_reference_objects(resource):
            key = record.key(ref)
            if key is None or key in chosen or key.partition("/")[0] not in REFERENCE_TYPES:
                continue
            target = record.resources.get(key)
            if target is not None:
                chosen[key] = target
                pending.append(target)


def choose(
    record: PatientRecord, extra: Iterable[Resource] = (), only: Collection[str] | None = None
) -> tuple[list[Section], dict[str, Resource]]:
    """The filled sections and every stored resource the document carries, Patient first.

    ``extra``: more of the record's resources to carry besides the sections' (the shared
    bundle's Coverage); ``only``: the LOINC codes of the sections to fill (default all).
    Carried resources come back with their references internalised.
    """
    by_type: dict[str, list[Resource]] = {}
    for key, resource in record.resources.items():
        if record.is_about_patient(resource):
            by_type.setdefault(key.partition("/")[0], []).append(resource)
    sections = fill_sections(Record(record.patient, by_type, record.resolve_own), only)
    chosen: dict[str, Resource] = {record.patient_key: record.patient}
    for section in sections:
        for resource in section.entries:
            chosen.setdefault(f"{resource['resourceType']}/{resource['id']}", resource)
    for resource in extra:
        chosen.setdefault(f"{resource['resourceType']}/{resource['id']}", resource)
    _closure(record, chosen)
    carried = {
        key: internalise(resource, lambda ref: _carried(record, chosen, ref))
        for key, resource in chosen.items()
    }
    return sections, carried


def _carried(record: PatientRecord, chosen: dict[str, Resource], reference: str) -> str | None:
    key = local_key(reference, record.base)
    return key if key is not None and key in chosen else None


def author_device() -> Resource:
    """The Composition's author: this software, which assembled the document."""
    return {
        "resourceType": "Device",
        "id": _AUTHOR_ID,
        "deviceName": [{"name": "HealthMesh patient summary", "type": "manufacturer-name"}],
        "manufacturer": "HealthMesh",
        "version": [{"value": __version__}],
    }


def compose(record: PatientRecord) -> Summary:
    """The IPS document Bundle for ``record`` (pure, given the clock)."""
    sections, carried = choose(record)
    base = record.base
    stamp = format_instant(now())
    bundle_id, composition_id = str(uuid.uuid4()), str(uuid.uuid4())
    author = author_device()
    patient = carried[record.patient_key]
    name = show.human_name(patient.get("name"))
    composition: Resource = {
        "resourceType": "Composition",
        "id": composition_id,
        "status": "final",
        "type": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "60591-5",
                    "display": "Patient summary Document",
                }
            ]
        },
        "subject": {
            "reference": f"{base}/{record.patient_key}",
            **({"display": name} if name else {}),
        },
        "date": stamp,
        "author": [{"reference": f"urn:uuid:{_AUTHOR_ID}", "display": "HealthMesh"}],
        "title": f"Patient Summary as of {stamp[:10]}",
        "section": [_section(s, base) for s in sections],
    }
    entries = [
        {"fullUrl": f"urn:uuid:{composition_id}", "resource": composition},
        *({"fullUrl": f"{base}/{key}", "resource": resource} for key, resource in carried.items()),
        {"fullUrl": f"urn:uuid:{_AUTHOR_ID}", "resource": author},
    ]
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
        "type": "document",
        "timestamp": stamp,
        "entry": entries,
    }
    return Summary(bundle, patient, sections, carried)


def _section(section: Section, base: str) -> Resource:
    out: Resource = {
        "title": section.spec.title,
        "code": section.spec.code_concept(),
        "text": {"status": "generated", "div": section.narrative()},
    }
    if section.empty:
        out["emptyReason"] = EMPTY_REASON
    else:
        out["entry"] = [
            {"reference": f"{base}/{r['resourceType']}/{r['id']}"} for r in section.entries
        ]
    return out


async def patient_summary(session: Session, patient_id: str, *, base: str) -> Summary:
    """The summary of ``patient_id``'s record as ``session``'s caller may see it."""
    return compose(await read_record(session, patient_id, base=base))


def _profile_parameter(request: FhirRequest) -> str | None:
    """``profile`` from the query or a Parameters body (IPS OperationDefinition summary)."""
    if (value := request.param("profile")) is not None:
        return value
    body = request.body
    if body is None:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$summary takes a Parameters resource in the body", expression="body")
    for parameter in body.get("parameter") or []:
        if isinstance(parameter, dict) and parameter.get("name") == "profile":
            value = parameter.get("valueCanonical") or parameter.get("valueUri")
            return str(value) if value is not None else ""
    return None


async def summary_operation(session: Session, request: FhirRequest, patient_id: str) -> FhirResult:
    """``GET|POST Patient/[id]/$summary``."""
    profile = _profile_parameter(request)
    if profile is not None and profile.split("|")[0] != IPS_BUNDLE_PROFILE:
        raise NotSupported(
            f"$summary produces the IPS document ({IPS_BUNDLE_PROFILE}), not '{profile}'"
        )
    summary = await patient_summary(session, patient_id, base=request.base)
    return FhirResult(status=200, body=summary.bundle)
