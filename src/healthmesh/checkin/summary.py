"""The one-screen check-in summary of a received Bundle (SPECS.md §6; issue #6 item 5).

Identity, the insurance card (CARIN C4DIC Coverage), problems, medications, allergies,
immunizations and the patient-provided PDFs (DocumentReference, offered for download). Pure:
plain JSON for the page, each line with the fullUrl it came from.
"""

from __future__ import annotations

from typing import Any

Resource = dict[str, Any]
C4DIC = "http://hl7.org/fhir/us/insurance-card/StructureDefinition/C4DIC-Coverage"


def concept(value: Any) -> str | None:
    """A CodeableConcept as people read it: its text, else a coding's display, else a code."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("text"), str):
        return str(value["text"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in value.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return None


def human_name(names: Any) -> str | None:
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or [])]
        if name.get("family"):
            parts.append(name["family"])
        parts += name.get("suffix") or []
        if parts:
            return " ".join(str(p) for p in parts)
    return None


def _code(value: Any) -> str | None:
    if isinstance(value, dict):
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                return str(coding["code"])
    return None


def _address(addresses: Any) -> str | None:
    for a in addresses if isinstance(addresses, list) else []:
        if isinstance(a, dict):
            if isinstance(a.get("text"), str):
                return str(a["text"])
            parts = [*(a.get("line") or []), a.get("city"), a.get("state"), a.get("postalCode")]
            text = ", ".join(str(p) for p in parts if p)
            if text:
                return text
    return None


class _Lookup:
    def __init__(self, entries: list[tuple[str, Resource]]) -> None:
        self.by_url = dict(entries)

    def name_of(self, reference: Any) -> str | None:
        if not isinstance(reference, dict):
            return None
        target = self.by_url.get(str(reference.get("reference", "")))
        if target is not None:
            if target.get("resourceType") == "Medication":
                return concept(target.get("code"))
            name = target.get("name")
            return name if isinstance(name, str) else human_name(name)
        display = reference.get("display")
        return display if isinstance(display, str) else None


def _patient(resource: Resource) -> dict[str, Any]:
    telecom = [
        f"{t.get('system', '')}: {t['value']}"
        for t in resource.get("telecom") or []
        if isinstance(t, dict) and t.get("value")
    ]
    identifiers = [
        {"system": i.get("system"), "value": i["value"], "type": concept(i.get("type"))}
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("value")
    ]
    return {
        "name": human_name(resource.get("name")),
        "birthDate": resource.get("birthDate"),
        "gender": resource.get("gender"),
        "address": _address(resource.get("address")),
        "telecom": telecom,
        "identifiers": identifiers,
    }


def _coverage(url: str, resource: Resource, lookup: _Lookup) -> dict[str, Any]:
    classes = {
        _code(c.get("type")) or "class": f"{c.get('value', '')} {c.get('name', '')}".strip()
        for c in resource.get("class") or []
        if isinstance(c, dict)
    }
    period = resource.get("period") or {}
    payors = [lookup.name_of(p) for p in resource.get("payor") or []]
    return {
        "fullUrl": url,
        "payor": ", ".join(p for p in payors if p) or None,
        "memberId": resource.get("subscriberId")
        or next(
            (i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict)), None
        ),
        "type": concept(resource.get("type")),
        "status": resource.get("status"),
        "group": classes.get("group"),
        "plan": classes.get("plan"),
        "period": f"{period.get('start', '…')} – {period.get('end', '…')}" if period else None,
        "c4dic": C4DIC in ((resource.get("meta") or {}).get("profile") or []),
    }


def _medication(url: str, resource: Resource, lookup: _Lookup) -> dict[str, Any]:
    name = concept(resource.get("medicationCodeableConcept")) or lookup.name_of(
        resource.get("medicationReference")
    )
    dosage = resource.get("dosageInstruction") or resource.get("dosage") or []
    text = next((d.get("text") for d in dosage if isinstance(d, dict) and d.get("text")), None)
    return {
        "fullUrl": url,
        "kind": resource["resourceType"],
        "name": name,
        "status": resource.get("status"),
        "dosage": text,
    }


def _document(url: str, resource: Resource) -> dict[str, Any]:
    content = [c for c in resource.get("content") or [] if isinstance(c, dict)]
    attachment = content[0].get("attachment") if content else None
    attachment = attachment if isinstance(attachment, dict) else {}
    return {
        "fullUrl": url,
        "title": attachment.get("title") or resource.get("description") or "Document",
        "type": concept(resource.get("type")),
        "contentType": attachment.get("contentType"),
        "size": attachment.get("size"),
        "data": attachment.get("data"),  # base64: the page offers it for download/view
        "patientAsserted": any(
            isinstance(s, dict) and s.get("code") == "PATAST"
            for s in (resource.get("meta") or {}).get("security") or []
        ),
    }


def check_in_summary(entries: list[tuple[str, Resource]]) -> dict[str, Any]:
    lookup = _Lookup(entries)
    summary: dict[str, Any] = {
        "patient": None,
        "coverage": [],
        "problems": [],
        "medications": [],
        "allergies": [],
        "immunizations": [],
        "documents": [],
        "other": {},
    }
    for url, r in entries:
        kind = r["resourceType"]
        if kind == "Patient":
            summary["patient"] = {"fullUrl": url, **_patient(r)}
        elif kind == "Coverage":
            summary["coverage"].append(_coverage(url, r, lookup))
        elif kind == "Condition":
            summary["problems"].append(
                {
                    "fullUrl": url,
                    "name": concept(r.get("code")),
                    "status": _code(r.get("clinicalStatus")),
                    "onset": r.get("onsetDateTime") or (r.get("onsetPeriod") or {}).get("start"),
                }
            )
        elif kind in ("MedicationStatement", "MedicationRequest"):
            summary["medications"].append(_medication(url, r, lookup))
        elif kind == "AllergyIntolerance":
            reactions = [
                concept(m)
                for reaction in r.get("reaction") or []
                if isinstance(reaction, dict)
                for m in reaction.get("manifestation") or []
            ]
            summary["allergies"].append(
                {
                    "fullUrl": url,
                    "name": concept(r.get("code")),
                    "criticality": r.get("criticality"),
                    "status": _code(r.get("clinicalStatus")),
                    "reactions": [x for x in reactions if x],
                }
            )
        elif kind == "Immunization":
            summary["immunizations"].append(
                {
                    "fullUrl": url,
                    "name": concept(r.get("vaccineCode")),
                    "date": r.get("occurrenceDateTime") or r.get("occurrenceString"),
                    "status": r.get("status"),
                }
            )
        elif kind == "DocumentReference":
            summary["documents"].append(_document(url, r))
        else:
            summary["other"][kind] = summary["other"].get(kind, 0) + 1
    return summary
