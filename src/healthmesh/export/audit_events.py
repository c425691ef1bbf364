"""AuditEvents of bulk export (privacy/audit.py's builders; docs/export.md, "Audit").

- The kick-off (accepted or refused) is a RESTful ``operation`` event with the request as
  its query entity: it touches no data yet, so it names no patient unless the token acts
  for one.
- Each file download is DICOM 110106 *Export*: one event per patient whose data the file
  holds (the audit model: an event lives in one patient's compartment, where that patient
  reads "who took my data"), naming the patient and the file, not every resource — and one
  more event, no patient's, for the node's auditors, naming the file, its type and counts.
  All of a download's events are appended to the chain in one batch, before the first byte
  is sent.
"""

from __future__ import annotations

from typing import Any

from healthmesh.auth.grant import AccessGrant
from healthmesh.export.jobs import ExportFile
from healthmesh.privacy import audit

EXPORT_FILE = "urn:healthmesh:export-file"
_KICKOFF = {"system": audit.HM_EVENT, "code": "export-kickoff", "display": "Bulk export kick-off"}
_DOWNLOAD = {"system": audit.HM_EVENT, "code": "export-file", "display": "Bulk export file"}
_OPERATION = {"system": audit.INTERACTION, "code": "operation", "display": "operation"}


def kickoff_event(
    grant: AccessGrant | None,
    *,
    request: str,
    status: int,
    address: str | None,
    node: str,
    description: str | None = None,
) -> dict[str, Any]:
    entity = [audit.patient_entity(grant.patient)] if grant is not None and grant.patient else []
    entity.append(audit.query_entity(request))
    return audit.event(
        "rest",
        action="E",
        outcome=audit.outcome_of_status(status),
        node=node,
        subtype=[_OPERATION, _KICKOFF],
        agent=audit.agents(grant, address=address),
        entity=entity,
        purpose=grant.purpose_of_use if grant is not None else None,
        description=description,
    )


def _file_entity(job_id: str, f: ExportFile, *, counts: bool) -> dict[str, Any]:
    detail = [{"type": "resourceType", "valueString": f.res_type}]
    if counts:
        detail += [
            {"type": "resources", "valueString": str(f.count)},
            {"type": "patients", "valueString": str(len(f.patients))},
        ]
    return {
        "what": {"identifier": {"system": EXPORT_FILE, "value": f"{job_id}/{f.n}"}},
        "type": {"system": audit.ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": audit.OBJECT_ROLE, "code": "20", "display": "Job"},
        "detail": detail,
    }


def download_events(
    grant: AccessGrant | None,
    job_id: str,
    f: ExportFile,
    *,
    address: str | None,
    node: str,
) -> list[dict[str, Any]]:
    facts: dict[str, Any] = {
        "action": "R",
        "outcome": audit.SUCCESS,
        "node": node,
        "subtype": [_DOWNLOAD],
        "agent": audit.agents(grant, address=address),
        "purpose": grant.purpose_of_use if grant is not None else None,
    }
    events = [
        audit.event(
            "export",
            entity=[audit.patient_entity(p), _file_entity(job_id, f, counts=False)],
            **facts,
        )
        for p in f.patients
    ]
    events.append(audit.event("export", entity=[_file_entity(job_id, f, counts=True)], **facts))
    return events
