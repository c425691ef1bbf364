"""The check-in, assembled: scan → receive → summary and candidates → import.

One :class:`CheckinService` per application (``app.state.checkin``). Nothing received is kept
between the preview and the import: the page sends the link back, the import fetches it again
(the sender sees a second access with our ``recipient``) and refuses when the content is not
the one the front desk reviewed (``reviewed`` digest), so what is imported is exactly what was
shown, and a link the patient revoked in between is not imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from healthmesh.checkin import errors
from healthmesh.checkin.candidates import ReadHook, find_candidates, suggestion
from healthmesh.checkin.fetch import SafeFetcher
from healthmesh.checkin.importer import Importer, transaction_bundle
from healthmesh.checkin.receive import Received, Receiver
from healthmesh.checkin.scan import Scanned, classify, decode_photo
from healthmesh.checkin.settings import CheckinSettings
from healthmesh.checkin.summary import check_in_summary
from healthmesh.fhir.errors import FhirError
from healthmesh.interactions import transaction
from healthmesh.interactions.context import AuditHook, FhirRequest
from healthmesh.interactions.dispatch import dispatch
from healthmesh.share.verify import CardVerifier, TrustedIssuer
from healthmesh.store.access import Visibility
from healthmesh.store.repository import Repository

NEW = "new"


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    visibility: Visibility
    importer: Importer
    base: str  # this node's FHIR base
    own_issuer: str  # this node's SMART Health Card iss
    audit_hook: AuditHook | None = None  # the import's AuditEvents, in its transaction
    audit_read: ReadHook | None = None  # the candidate searches' AuditEvents


class CheckinService:
    def __init__(self, repository: Repository, settings: CheckinSettings) -> None:
        self.repository = repository
        self.settings = settings
        self.http = httpx.AsyncClient(follow_redirects=False)
        self.receiver = Receiver(settings, SafeFetcher(settings, self.http))
        self._verifiers: dict[str, CardVerifier] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def verifier(self, own_issuer: str) -> CardVerifier:
        found = self._verifiers.get(own_issuer)
        if found is None:
            issuers = [own_issuer if i == "self" else i for i in self.settings.trusted_issuers]
            found = CardVerifier([TrustedIssuer(iss=i) for i in issuers], http=self.http)
            self._verifiers[own_issuer] = found
        return found

    @staticmethod
    def scan_text(text: str) -> Scanned:
        return classify(text)

    @staticmethod
    def scan_photo(data: bytes) -> tuple[str, Scanned]:
        text = decode_photo(data)
        return text, classify(text)

    async def receive(self, scanned: Scanned, passcode: str | None, caller: Caller) -> Received:
        return await self.receiver.receive(
            scanned, passcode=passcode, verifier=self.verifier(caller.own_issuer)
        )

    async def preview(self, received: Received, caller: Caller) -> dict[str, Any]:
        """The one-screen summary, with the clinic's candidate Patients."""
        summary = check_in_summary(received.entries)
        patient = next(r for _, r in received.entries if r["resourceType"] == "Patient")
        async with self.repository.session(write=False, visibility=caller.visibility) as session:
            candidates = await find_candidates(
                session, patient, caller.base, on_read=caller.audit_read
            )
        return {
            "source": received.source.as_json(),
            "digest": received.digest,
            "summary": summary,
            "cards": [
                {"iss": c.iss, "revoked": c.revoked, "expired": c.expired, "types": list(c.types)}
                for c in received.cards
            ],
            "warnings": received.warnings,
            "candidates": [c.as_json() for c in candidates],
            "suggested": suggestion(candidates),
        }

    async def import_share(
        self, received: Received, *, patient: str, reviewed: str | None, caller: Caller
    ) -> dict[str, Any]:
        if reviewed is not None and reviewed != received.digest:
            raise errors.CheckinProblem(
                "content-changed",
                "The shared data changed since it was reviewed; review it again before importing.",
                status=409,
                code="conflict",
            )
        patient_id = None if patient == NEW else patient
        chosen = await self._check_patient(patient_id, caller) if patient_id else None
        bundle, _ = transaction_bundle(
            received, patient_id=patient_id, importer=caller.importer, chosen=chosen
        )
        request = FhirRequest(
            method="POST",
            path=(),
            body=bundle,
            base=caller.base,
            visibility=caller.visibility,
            secured=True,
            audit_hook=caller.audit_hook,
        )
        result = await transaction.process(self.repository, request)
        answer = _imported(result.body or {}, bundle)
        answer["patient"] = answer["patient"] or f"Patient/{patient_id}"
        return answer

    async def _check_patient(self, patient_id: str, caller: Caller) -> dict[str, Any]:
        """The chosen Patient must be one the caller can read (the read's SQL decides)."""
        request = FhirRequest(
            method="GET",
            path=("Patient", patient_id),
            base=caller.base,
            visibility=caller.visibility,
        )
        try:
            async with self.repository.session(write=False, visibility=caller.visibility) as s:
                result = await dispatch(s, request)
        except FhirError:
            raise errors.CheckinProblem(
                "unknown-patient",
                "The chosen patient is not one of this clinic's patients (or not yours to see).",
                code="not-found",
                expression="patient",
            ) from None
        content = result.version.content if result.version is not None else None
        found: dict[str, Any] = orjson.loads(content) if content is not None else {}
        return found


def _imported(response: dict[str, Any], bundle: dict[str, Any]) -> dict[str, Any]:
    created: list[str] = []
    existing: list[str] = []
    patient = provenance = None
    for sent, entry in zip(bundle["entry"], response.get("entry") or [], strict=False):
        answer = entry.get("response") or {}
        location = str(answer.get("location", "")).split("/_history/")[0]
        kind = sent["resource"]["resourceType"]
        if not location:
            continue
        (created if str(answer.get("status", "")).startswith("201") else existing).append(location)
        if kind == "Patient":
            patient = location
        elif kind == "Provenance":
            provenance = location
    return {
        "patient": patient,
        "provenance": provenance,
        "created": created,
        "existing": existing,
    }
