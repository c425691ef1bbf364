"""Structural checkers for IPS documents and Kill the Clipboard PatientSharedBundles.

Each returns a list of problems (empty: the Bundle passes), so a test can show all of them at
once, and the checkers themselves can be tested on broken Bundles.

IPS (IPS IG R4, SPECS.md §8; R4 bundle.html and composition.html invariants):
- a Bundle of type document with identifier and timestamp (bdl-9, bdl-10);
- the first entry a Composition (bdl-11) with status, type LOINC 60591-5, subject, date,
  author and title; the Patient it is about second;
- the required sections (Problems 11450-4, Allergies 48765-2, Medications 10160-0) present,
  each once; every section with XHTML narrative; a required section with no entries states
  an emptyReason, and no section has both entries and an emptyReason (cmp-2);
- every fullUrl unique (bdl-7) and every reference resolvable inside the Bundle.

Reference resolution follows R4 bundle.html#references: ``#id`` in the resource's contained;
an absolute URL (or urn) by exact fullUrl; ``Type/id`` against the RESTful root of the
referring entry's fullUrl. When the referring fullUrl is a ``urn:uuid:`` the IG's own
examples refer by ``Type/id`` to the entry with that type and id, which the IG's validator
accepts, so that is accepted too.

PatientSharedBundle (CMS Kill the Clipboard, SPECS.md §6): type collection with timestamp;
exactly one Patient, with name, birthDate and gender, and at least one other entry; every
fullUrl ``urn:uuid:``; every reference a fullUrl in the Bundle; DocumentReferences current,
patient-shared, subject = author = the Patient, PATAST, an inline PDF, LOINC 51855-5 or
60591-5; Coverage profiled C4DIC.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

Resource = dict[str, Any]
LOINC = "http://loinc.org"
REQUIRED_SECTIONS = {"11450-4": "Problems", "48765-2": "Allergies", "10160-0": "Medications"}
XHTML = "http://www.w3.org/1999/xhtml"
C4DIC = "http://hl7.org/fhir/us/insurance-card/StructureDefinition/C4DIC-Coverage"
PATIENT_SHARED = ("https://cms.gov/fhir/CodeSystem/patient-shared-category", "patient-shared")
_RESTFUL = re.compile(r"^(?P<root>.*?)/?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]+)?$")


def references(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, reference) for every Reference.reference in ``node``, contained included."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if key == "reference" and isinstance(value, str):
                yield path, value
            elif isinstance(value, dict | list):
                yield from references(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from references(item, f"{path}[{i}]")


def _codes(concept: Any) -> set[tuple[str, str]]:
    if not isinstance(concept, dict):
        return set()
    return {
        (str(c.get("system")), str(c.get("code")))
        for c in concept.get("coding") or []
        if isinstance(c, dict)
    }


class _Index:
    def __init__(self, bundle: Resource) -> None:
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        self.full_urls = {e.get("fullUrl") for e in entries if isinstance(e.get("fullUrl"), str)}
        self.by_type_id = {
            (e["resource"].get("resourceType"), e["resource"].get("id"))
            for e in entries
            if isinstance(e.get("resource"), dict)
        }

    def resolves(self, reference: str, resource: Resource, full_url: str | None) -> bool:
        if reference.startswith("#"):
            wanted = reference[1:]
            return wanted == "" or any(
                isinstance(c, dict) and c.get("id") == wanted
                for c in resource.get("contained") or []
            )
        plain = re.sub(r"/_history/[^/]+$", "", reference)
        if "://" in reference or reference.startswith("urn:"):
            return plain in self.full_urls
        match = _RELATIVE.match(reference)
        if match is None:
            return False
        if full_url and "://" in full_url:
            restful = _RESTFUL.match(full_url)
            if restful is not None and f"{restful['root']}/{match[1]}/{match[2]}" in self.full_urls:
                return True
        return (match[1], match[2]) in self.by_type_id


def _entry_problems(bundle: Resource) -> list[str]:
    problems = []
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        return ["Bundle.entry is missing or empty"]
    seen: set[str] = set()
    index = _Index(bundle)
    for i, entry in enumerate(entries):
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(full_url, str):
            problems.append(f"entry[{i}] has no fullUrl")
        elif full_url in seen:
            problems.append(f"entry[{i}].fullUrl {full_url} is not unique")
        else:
            seen.add(full_url)
        if not isinstance(resource, dict):
            problems.append(f"entry[{i}] has no resource")
            continue
        for path, reference in references(resource):
            if not index.resolves(reference, resource, full_url):
                problems.append(
                    f"entry[{i}] ({resource.get('resourceType')}) {path}: '{reference}'"
                    " does not resolve inside the Bundle"
                )
    return problems


def _narrative_problem(text: Any) -> str | None:
    if not isinstance(text, dict) or not isinstance(text.get("div"), str):
        return "has no narrative (text.div)"
    div = text["div"]
    if not div.startswith("<div") or XHTML not in div[: div.find(">") + 1]:
        return "narrative is not an XHTML div"
    if not re.sub(r"<[^>]+>", "", div).strip():
        return "narrative is empty"
    if text.get("status") not in ("generated", "extensions", "additional", "empty"):
        return "narrative has no valid status"
    return None


def ips_problems(bundle: Resource) -> list[str]:
    """What makes ``bundle`` fail the IPS document's structural rules."""
    problems: list[str] = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "document":
        problems.append("not a Bundle of type document")
    for element in ("identifier", "timestamp"):
        if not bundle.get(element):
            problems.append(f"Bundle.{element} is missing")
    problems += _entry_problems(bundle)
    entries = [e.get("resource") or {} for e in bundle.get("entry") or [] if isinstance(e, dict)]
    if not entries or entries[0].get("resourceType") != "Composition":
        return [*problems, "the first entry is not a Composition"]
    composition = entries[0]
    for element in ("status", "type", "subject", "date", "author", "title"):
        if not composition.get(element):
            problems.append(f"Composition.{element} is missing")
    if (LOINC, "60591-5") not in _codes(composition.get("type")):
        problems.append("Composition.type is not LOINC 60591-5")
    patients = [r for r in entries if r.get("resourceType") == "Patient"]
    if len(entries) < 2 or entries[1].get("resourceType") != "Patient":
        problems.append("the second entry is not the Patient")
    subject = (composition.get("subject") or {}).get("reference", "")
    subject_id = subject.rstrip("/").rsplit("/", 1)[-1].removeprefix("urn:uuid:")
    full_urls = {e.get("fullUrl"): e.get("resource") for e in bundle.get("entry") or []}
    if not any(p.get("id") == subject_id for p in patients) and not (
        isinstance(full_urls.get(subject), dict)
        and full_urls[subject].get("resourceType") == "Patient"
    ):
        problems.append("Composition.subject is not the Bundle's Patient")
    counts: dict[str, int] = {}
    for i, section in enumerate(composition.get("section") or []):
        where = f"Composition.section[{i}] ({section.get('title')})"
        codes = {code for system, code in _codes(section.get("code")) if system == LOINC}
        for code in codes:
            counts[code] = counts.get(code, 0) + 1
        if not codes:
            problems.append(f"{where} has no LOINC code")
        if (problem := _narrative_problem(section.get("text"))) is not None:
            problems.append(f"{where} {problem}")
        has_entries = bool(section.get("entry")) or bool(section.get("section"))
        if has_entries and section.get("emptyReason"):
            problems.append(f"{where} has entries and an emptyReason (cmp-2)")
        if codes & REQUIRED_SECTIONS.keys() and not has_entries and not section.get("emptyReason"):
            problems.append(f"{where} is required, empty, and states no emptyReason")
    for code, name in REQUIRED_SECTIONS.items():
        if counts.get(code, 0) != 1:
            problems.append(f"the {name} section {code} appears {counts.get(code, 0)} times")
    return problems


def _pdf(data: Any) -> bytes | None:
    try:
        raw = base64.b64decode(data if isinstance(data, str) else "", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if raw.startswith(b"%PDF-") else None


def _document_problems(where: str, doc: Resource, patient_url: str) -> list[str]:
    problems = []
    if doc.get("status") != "current":
        problems.append(f"{where} status is not current")
    categories = set().union(*(_codes(c) for c in doc.get("category") or []))
    if PATIENT_SHARED not in categories:
        problems.append(f"{where} is not in the patient-shared category")
    if (doc.get("subject") or {}).get("reference") != patient_url:
        problems.append(f"{where} subject is not the Patient")
    authors = [a.get("reference") for a in doc.get("author") or [] if isinstance(a, dict)]
    if authors != [patient_url]:
        problems.append(f"{where} author is not the Patient")
    security = {
        str(s.get("code"))
        for s in (doc.get("meta") or {}).get("security") or []
        if isinstance(s, dict)
    }
    if "PATAST" not in security:
        problems.append(f"{where} meta.security has no PATAST")
    types = {code for system, code in _codes(doc.get("type")) if system == LOINC}
    if not types & {"51855-5", "60591-5"}:
        problems.append(f"{where} type is neither LOINC 51855-5 nor 60591-5")
    contents = doc.get("content") or []
    attachments = [c.get("attachment") or {} for c in contents if isinstance(c, dict)]
    if not attachments or any(
        a.get("contentType") != "application/pdf" or _pdf(a.get("data")) is None
        for a in attachments
    ):
        problems.append(f"{where} does not carry an inline base64 PDF")
    return problems


def shared_bundle_problems(bundle: Resource) -> list[str]:
    """What makes ``bundle`` fail the PatientSharedBundle rules."""
    problems: list[str] = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "collection":
        problems.append("not a Bundle of type collection")
    if not bundle.get("timestamp"):
        problems.append("Bundle.timestamp is missing")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    full_urls = [e.get("fullUrl") for e in entries]
    if len(set(full_urls)) != len(full_urls):
        problems.append("fullUrls are not unique")
    for i, url in enumerate(full_urls):
        if not isinstance(url, str) or not re.fullmatch(r"urn:uuid:[0-9a-f\-]{36}", url):
            problems.append(f"entry[{i}].fullUrl {url!r} is not a urn:uuid")
    known = set(full_urls)
    patients = [
        (e.get("fullUrl"), e["resource"])
        for e in entries
        if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1:
        problems.append(f"{len(patients)} Patients, not exactly one")
    if len(entries) < 2:
        problems.append("nothing besides the Patient")
    patient_url = str(patients[0][0]) if patients else ""
    for element in ("name", "birthDate", "gender"):
        if patients and not patients[0][1].get(element):
            problems.append(f"the Patient has no {element}")
    for i, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            problems.append(f"entry[{i}] has no resource")
            continue
        kind = resource.get("resourceType")
        for path, reference in references(resource):
            if reference.startswith("#"):
                continue
            if reference not in known:
                problems.append(f"entry[{i}] ({kind}) {path}: '{reference}' is not internal")
        if kind == "DocumentReference":
            problems += _document_problems(f"entry[{i}] DocumentReference", resource, patient_url)
        if kind == "Coverage" and C4DIC not in (resource.get("meta") or {}).get("profile", []):
            problems.append(f"entry[{i}] Coverage is not profiled C4DIC-Coverage")
    return problems
