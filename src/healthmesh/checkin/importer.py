"""Import a received share into the clinic's store: one FHIR transaction, all or nothing.

What the CMS receiver rules ask to persist (SPECS.md §6): problems (Condition), medications
(MedicationStatement / MedicationRequest and their Medication), allergies, immunizations and
the patient-provided PDFs (DocumentReference with their inline attachment), each linked to the
chosen Patient (or to a new one made from the shared Patient), each labelled patient-asserted
(``meta.security`` v3 PATAST), and one Provenance: the patient as author/source, the front
desk as enterer, the share as entity, every imported resource as target.

Idempotent: every resource is a conditional create on an identifier of :data:`CHECKIN_SYSTEM`
whose value hashes the target patient and the resource as shared, and the Provenance is a
conditional create on its entity's identifier (a hash of the patient and the share), so
importing the same share again for the same patient writes nothing new. References to
entries that are not imported (Practitioners, Encounters, …) keep only their display.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from healthmesh.checkin.bundle_rules import prune_empty
from healthmesh.checkin.candidates import CHECKIN_SYSTEM
from healthmesh.checkin.receive import Received
from healthmesh.checkin.summary import concept, human_name
from healthmesh.fhir.references import rewrite_references

Resource = dict[str, Any]
IMPORTED = (
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "Medication",
    "AllergyIntolerance",
    "Immunization",
    "DocumentReference",
)
PATAST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "PATAST",
    "display": "patient asserted",
}
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
SHL_SOURCE = "https://healthmesh.example/fhir/sid/checkin-share"


@dataclass(frozen=True, slots=True, kw_only=True)
class Importer:
    """Who imports: their fhirUser (``Practitioner/…``) or a description of the client."""

    fhir_user: str | None
    client_id: str


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _canonical(resource: Resource) -> str:
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()


def _labelled(resource: Resource, key: str) -> Resource:
    """A copy to create: no id or server meta, PATAST added, our idempotency identifier."""
    body = copy.deepcopy(resource)
    body.pop("id", None)
    security = [
        s
        for s in (body.pop("meta", None) or {}).get("security") or []
        if isinstance(s, dict) and s.get("code") != "PATAST"
    ]
    body["meta"] = {"security": [*security, PATAST]}
    identifiers = [
        i
        for i in body.get("identifier") or []
        if isinstance(i, dict) and i.get("system") != CHECKIN_SYSTEM
    ]
    body["identifier"] = [*identifiers, {"system": CHECKIN_SYSTEM, "value": key}]
    return body


def _display_of(target: Resource | None) -> str:
    if target is None:
        return "(not part of the share)"
    name = target.get("name")
    text = name if isinstance(name, str) else human_name(name)
    kind = target["resourceType"]
    return (
        f"{text} ({kind}, as shared)"
        if text
        else f"{concept(target.get('code')) or kind} (as shared)"
    )


def new_patient_key(received: Received) -> str:
    """The identifier value a Patient created from this share's Patient gets."""
    patient = next(r for _, r in received.entries if r["resourceType"] == "Patient")
    return _hash("new", _canonical(patient))


def transaction_bundle(
    received: Received,
    *,
    patient_id: str | None,
    importer: Importer,
    chosen: Resource | None = None,
) -> tuple[Resource, Resource]:
    """The transaction Bundle, and the Provenance it carries (``patient_id`` None: a new one).

    ``chosen`` is the existing Patient's resource: when it was itself created from this
    share's Patient, the keys are those of that first import, so importing again onto it
    (now found as the match) writes nothing new either.
    """
    entries = received.entries
    by_url = dict(entries)
    patient_url, patient = next((u, r) for u, r in entries if r["resourceType"] == "Patient")
    created_key = new_patient_key(received)
    ours = {
        i.get("value")
        for i in (chosen or {}).get("identifier") or []
        if isinstance(i, dict) and i.get("system") == CHECKIN_SYSTEM
    }
    patient_key = created_key if not patient_id or created_key in ours else f"Patient/{patient_id}"
    imported = [(u, r) for u, r in entries if r["resourceType"] in IMPORTED]
    kept = {u for u, _ in imported}
    # Card Bundles use resource:N fullUrls; a transaction wants urn:uuid ones.
    urn = {
        u: (u if u.startswith("urn:uuid:") else f"urn:uuid:{_uuid(patient_key, u)}")
        for u, _ in entries
    }
    patient_ref = f"Patient/{patient_id}" if patient_id else urn[patient_url]

    def rewrite(resource: Resource) -> Resource:
        def one(reference: str) -> str | None:
            if reference == patient_url:
                return patient_ref
            if reference in kept:
                return urn[reference]
            return None

        _display_only(resource, kept | {patient_url}, by_url)
        rewrite_references(resource, one)
        prune_empty(resource)
        return resource

    tx_entries: list[Resource] = []
    targets: list[Resource] = [{"reference": patient_ref}]
    if patient_id is None:
        body = _labelled(patient, patient_key)
        body.pop("generalPractitioner", None)
        body.pop("managingOrganization", None)
        body.pop("link", None)
        tx_entries.append(_post(urn[patient_url], rewrite(body), patient_key))
    for url, resource in imported:
        key = _hash(patient_key, _canonical(resource))
        tx_entries.append(_post(urn[url], rewrite(_labelled(resource, key)), key))
        targets.append({"reference": urn[url]})
    import_key = _hash(patient_key, received.source.digest, received.digest)
    provenance = _provenance(received, targets, patient_ref, importer, import_key)
    tx_entries.append(
        {
            "fullUrl": f"urn:uuid:{_uuid(import_key, 'provenance')}",
            "resource": provenance,
            "request": {
                "method": "POST",
                "url": "Provenance",
                "ifNoneExist": f"entity:identifier={SHL_SOURCE}|{import_key}",
            },
        }
    )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": tx_entries}
    return bundle, provenance


def _uuid(*parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def _post(full_url: str, resource: Resource, key: str) -> Resource:
    kind = resource["resourceType"]
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "POST",
            "url": kind,
            "ifNoneExist": f"identifier={CHECKIN_SYSTEM}|{key}",
        },
    }


def _display_only(node: Any, kept: set[str], by_url: dict[str, Resource]) -> None:
    """References to shared entries that are not imported become display-only References."""
    if isinstance(node, dict):
        reference = node.get("reference")
        internal = isinstance(reference, str) and reference.startswith(("urn:uuid:", "resource:"))
        if internal and reference not in kept:
            node.pop("reference")
            node.setdefault("display", _display_of(by_url.get(str(reference))))
        for value in node.values():
            _display_only(value, kept, by_url)
    elif isinstance(node, list):
        for value in node:
            _display_only(value, kept, by_url)


def _provenance(
    received: Received,
    targets: list[Resource],
    patient_ref: str,
    importer: Importer,
    import_key: str,
) -> Resource:
    source = received.source
    what = (
        "SMART Health Link" if source.kind == "shl" else f"SMART Health Card from {source.issuer}"
    )
    label = f" '{source.label}'" if source.label else ""
    enterer: Resource = (
        {"reference": importer.fhir_user}
        if importer.fhir_user and not importer.fhir_user.startswith("Patient/")
        else {"display": f"front desk (client {importer.client_id})"}
    )
    return {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE"}]},
        "agent": [
            {
                # The patient is the source and author of what they shared (CMS receiver rules).
                "type": {"coding": [{"system": PARTICIPANT, "code": "author"}]},
                "role": [{"coding": [{"system": ROLE_CLASS, "code": "PAT", "display": "patient"}]}],
                "who": {"reference": patient_ref},
            },
            {
                "type": {"coding": [{"system": PARTICIPANT, "code": "enterer"}]},
                "who": enterer,
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": SHL_SOURCE, "value": import_key},
                    "display": f"Patient-provided data received by {what}{label}"
                    f" (content sha256 {received.digest[:16]}…)",
                },
            }
        ],
    }
