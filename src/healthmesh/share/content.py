"""What a share holds when the patient gives no Bundle: their own PatientSharedBundle.

The share API (api/share_routes.py) asks ``Sharing.summaries`` for the content of a new link;
this source builds the Kill the Clipboard bundle (share/bundle.py: the summary, the insurance
card, patient-provided PDFs, a PDF rendering) from the patient's own record, read with the
**caller's token's** visibility (its scopes, and the patient's Consents for that app, compiled
into the SQL like any other read), so a share never carries more than that token could read.

What goes in is the patient's choice (:class:`ShareContents`, the ``contents`` member of a
create request, docs/sharing.md "For the patient"): which IPS sections, the insurance card or
not, PDFs of their own, the PDF rendering or not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.policy import visibility_for
from healthmesh.fhir.errors import NotFound
from healthmesh.share.bundle import DEFAULT_TITLE, PatientDocument, compose_shared_bundle
from healthmesh.share.errors import InvalidRequest
from healthmesh.share.ips import read_record
from healthmesh.share.ips_sections import SECTION_CODES, SECTIONS
from healthmesh.store.repository import Repository

MAX_DOCUMENTS = 5
MAX_TITLE = 200


@dataclass(frozen=True, slots=True)
class ShareContents:
    """What of their record a patient shares. ``sections`` None means every section."""

    sections: frozenset[str] | None = None
    insurance: bool = True
    rendering: bool = True
    documents: tuple[PatientDocument, ...] = ()


def section_choices() -> list[dict[str, Any]]:
    """The sections a patient can choose from (LOINC code, title), in IPS order."""
    return [{"code": s.code, "title": s.title, "required": s.required} for s in SECTIONS]


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, True)
    if not isinstance(value, bool):
        raise InvalidRequest(f"contents.{name} must be true or false")
    return value


def _document(value: object, where: str) -> PatientDocument:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} is an object {{title, contentType, data}}")
    if value.get("contentType", "application/pdf") != "application/pdf":
        raise InvalidRequest(f"{where}.contentType: a patient-provided document is a PDF")
    raw = value.get("data")
    try:
        data = base64.b64decode(raw if isinstance(raw, str) else "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data.startswith(b"%PDF-"):
        raise InvalidRequest(f"{where}.data is not a base64-encoded PDF")
    title = value.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE):
        raise InvalidRequest(f"{where}.title is a string of at most {MAX_TITLE} characters")
    return PatientDocument(data, title.strip() if title and title.strip() else DEFAULT_TITLE)


def parse_contents(value: object) -> ShareContents:
    """``contents`` of a create request: ``{sections?, insurance?, rendering?, documents?}``."""
    if value is None:
        return ShareContents()
    if not isinstance(value, dict):
        raise InvalidRequest("contents must be a JSON object")
    unknown = sorted(set(value) - {"sections", "insurance", "rendering", "documents"})
    if unknown:
        raise InvalidRequest(
            f"contents.{unknown[0]} is unknown: give sections, insurance, rendering, documents"
        )
    sections: frozenset[str] | None = None
    if "sections" in value:
        listed = value["sections"]
        if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
            raise InvalidRequest("contents.sections is a list of LOINC section codes")
        strange = sorted(set(listed) - SECTION_CODES)
        if strange:
            raise InvalidRequest(
                f"contents.sections: '{strange[0]}' is not an IPS section code"
                f" ({', '.join(sorted(SECTION_CODES))})"
            )
        sections = frozenset(listed)
    documents = value.get("documents") or []
    if not isinstance(documents, list) or len(documents) > MAX_DOCUMENTS:
        raise InvalidRequest(f"contents.documents is a list of at most {MAX_DOCUMENTS} PDFs")
    return ShareContents(
        sections=sections,
        insurance=_flag(value, "insurance"),
        rendering=_flag(value, "rendering"),
        documents=tuple(_document(d, f"contents.documents[{i}]") for i, d in enumerate(documents)),
    )


class OwnRecordBundles:
    def __init__(
        self, repository: Repository, base: str, *, consent_default_permit: bool = True
    ) -> None:
        self.repository = repository
        self.base = base
        self.consent_default_permit = consent_default_permit

    async def summary(
        self, grant: AccessGrant, contents: ShareContents | None = None
    ) -> dict[str, Any] | None:
        """The PatientSharedBundle of ``grant.patient`` as that token sees the record."""
        assert grant.patient is not None
        contents = contents or ShareContents()
        visibility = visibility_for(grant, consent_default_permit=self.consent_default_permit)
        async with self.repository.session(write=False, visibility=visibility) as session:
            try:
                record = await read_record(
                    session, grant.patient, base=self.base, extra_types=("Coverage",)
                )
            except NotFound:
                return None
        # Choosing, composing and the PDF rendering are CPU work (tens of ms for a large
        # record): off the event loop, so other requests are not held up behind them.
        bundle = await asyncio.to_thread(
            compose_shared_bundle,
            record,
            documents=contents.documents,
            with_rendering=contents.rendering,
            sections=contents.sections,
            insurance=contents.insurance,
        )
        return dict(bundle)
