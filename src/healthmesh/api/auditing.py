"""Every FHIR access by a token holder becomes AuditEvents (privacy/audit.py, docs/privacy.md).

- Writes are audited inside the write's own database transaction, as its last step: the
  events commit with the change or not at all.
- Reads (and refusals) are audited after the answer is computed and before it is sent:
  stored and chained by the process's appender, which commits every waiting request's
  events as one batch (privacy/appender.py); if the audit cannot be written the request
  fails (503, an OperationOutcome), so no data leaves without its record.
- ``HEALTHMESH_AUDIT=off`` turns all of it off (benchmarks, operators who audit elsewhere):
  not for production (docs/security.md).
- ``--open`` has no token, hence nobody to name: it is not audited (it is for experiments).

The interaction is named from the request's shape (R4 http.html#summary), the resources from
what was served: the version of a read or write, every entry of a Bundle answer.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from healthmesh.auth.grant import AccessGrant
from healthmesh.auth.identity.claims import IdentityClaims
from healthmesh.auth.identity.matching import MATCHED, MatchDecision
from healthmesh.fhir.errors import FhirError, Issue
from healthmesh.fhir.structure import is_resource_type
from healthmesh.interactions.context import AuditHook, FhirRequest, FhirResult
from healthmesh.privacy import audit, chain, read_events
from healthmesh.privacy.appender import AuditAppender, AuditUnavailable
from healthmesh.share.errors import NotRecorded
from healthmesh.share.manifest import Conn, LinkAccess
from healthmesh.store.repository import Session

log = logging.getLogger(__name__)


def interaction_of(request: FhirRequest) -> str | None:
    """The FHIR interaction a request is (privacy/audit.py INTERACTIONS); None: not audited."""
    path, method = request.path, request.method
    if path[:1] == ("metadata",):
        return None
    if not path:
        if method == "POST":
            body = request.body if isinstance(request.body, dict) else {}
            return "batch" if body.get("type") == "batch" else "transaction"
        return "search-system"
    if path[0] == "_history":
        return "history-system"
    if any(p.startswith("$") for p in path):
        return "operation"
    if len(path) == 1:
        return {
            "GET": "search-type",
            "HEAD": "search-type",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method)
    if path[1] == "_search":
        return "search-type"
    if path[1] == "_history":
        return "history-type"
    if len(path) == 2:
        return {
            "GET": "read",
            "HEAD": "read",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method)
    if len(path) == 3 and is_resource_type(path[2]):
        return "search-compartment"
    if path[2] == "_history":
        return "history-instance" if len(path) == 3 else "vread"
    return None


# Writes of a Consent and the consent change each is (privacy/audit.py consent_event); a
# Consent set inactive (or rejected, or entered in error), or deleted, is withdrawn: revoked.
CONSENT_CHANGES = {"create": "create", "update": "update", "patch": "update", "delete": "revoke"}
REVOKED = frozenset({"inactive", "rejected", "entered-in-error"})


def touched_by(result: FhirResult) -> list[audit.Touched]:
    version = result.version
    if version is not None:
        if version.owner_read and (version.content is not None or version.deleted):
            # The row's compartment key, as written (fhir/compartment.py): no need to parse
            # the served resource again to find whose it is.
            return [
                audit.Touched(version.res_type, version.id, str(version.version_id), version.owner)
            ]
        if version.content is not None:
            return [audit.Touched.of(orjson.loads(version.content))]
        return [audit.Touched(version.res_type, version.id, str(version.version_id))]
    if result.body is not None and result.body.get("resourceType") == "Bundle":
        return audit.touched_in(result.body)
    return []


def _query_of(request: FhirRequest, interaction: str) -> str | None:
    """A search's query as sent, for its event's query entity (BALP); None for the rest."""
    query = request.query_string if interaction.startswith("search") else None
    return f"{'/'.join(request.path)}?{query}" if query else None


class AuditFailed(FhirError):
    """The audit trail cannot be written: the request fails with no data (503: the node's
    infrastructure, not the client, is at fault; worth retrying later)."""

    def __init__(self) -> None:
        super().__init__(
            [
                Issue(
                    severity="fatal",
                    code="transient",
                    diagnostics="The access could not be recorded in the audit trail,"
                    " so it was not performed; try again later",
                )
            ],
            503,
        )


class Auditor:
    """The node's auditing: builds the events of FHIR interactions and records them.

    ``appender`` records reads, refusals and other events outside a write (None: auditing
    is off, ``enabled`` False, and nothing is built or recorded)."""

    def __init__(self, node: str, appender: AuditAppender | None) -> None:
        self.node = node
        self.appender = appender

    @property
    def enabled(self) -> bool:
        return self.appender is not None

    def events(
        self,
        request: FhirRequest,
        grant: AccessGrant,
        *,
        result: FhirResult | None = None,
        status: int,
        address: str | None,
        description: str | None = None,
    ) -> list[dict[str, Any]]:
        interaction = interaction_of(request) if self.appender is not None else None
        if interaction is None:
            return []
        events = audit.interaction_events(
            grant,
            interaction,
            touched_by(result) if result is not None else [],
            audit.outcome_of_status(status),
            query=_query_of(request, interaction),
            address=address,
            description=description,
            node=self.node,
        )
        if interaction in CONSENT_CHANGES and result is not None and status < 300:
            events += self._consent_change(interaction, result, grant, address)
        return events

    def prepared(
        self,
        request: FhirRequest,
        grant: AccessGrant,
        *,
        result: FhirResult | None = None,
        status: int,
        address: str | None,
        description: str | None = None,
    ) -> chain.Prepared:
        """:meth:`events`, prepared for the chain (:meth:`record_prepared`). A read's or a
        search's are made from its caller's template (privacy/read_events.py): the same
        events, at a fraction of the cost."""
        interaction = interaction_of(request) if self.appender is not None else None
        if interaction is None:
            return chain.Prepared({}, [])
        if description is None and audit.INTERACTIONS[interaction] in ("R", "E"):
            fast = read_events.interaction_prepared(
                grant,
                interaction,
                touched_by(result) if result is not None else [],
                audit.outcome_of_status(status),
                query=_query_of(request, interaction),
                address=address,
                node=self.node,
            )
            if fast is not None:
                return fast
        events = self.events(
            request, grant, result=result, status=status, address=address, description=description
        )
        return chain.prepare_events(events)

    def _consent_change(
        self, interaction: str, result: FhirResult, grant: AccessGrant, address: str | None
    ) -> list[dict[str, Any]]:
        """A written patient Consent is also a consent change (issue 5, item 4): an event of
        its own, in the patient's trail — what they decided, besides the REST write."""
        version = result.version
        if version is None or version.res_type != "Consent":
            return []
        if version.content is None:
            # Deleted: a revocation by whoever owned it (the tombstone's owner, as the delete
            # read it); a Consent deleted already, or of no patient, decides nothing now.
            if not version.deleted or not version.owner_read or result.unchanged:
                return []
            patient, change = version.owner, "revoke"
        else:
            content = orjson.loads(version.content)
            patient, change = audit.owner(content), CONSENT_CHANGES[interaction]
            if change == "update" and content.get("status") in REVOKED:
                change = "revoke"
        if patient is None:
            return []  # not in a patient's compartment: no patient decided anything
        return [
            audit.consent_event(
                grant,
                consent_id=version.id,
                patient=patient,
                change=change,
                address=address,
                node=self.node,
            )
        ]

    def transaction_hook(
        self, grant: AccessGrant, address: str | None, *, description: str | None = None
    ) -> AuditHook:
        """For transaction and batch Bundles (and the check-in import, which is one): each
        entry's events, written in the Bundle's own transaction."""

        async def hook(session: Session, entry: FhirRequest, results: list[FhirResult]) -> None:
            touched = [t for r in results for t in touched_by(r)]
            interaction = interaction_of(entry) or "transaction"
            events = audit.interaction_events(
                grant,
                interaction,
                touched,
                audit.outcome_of_status(200),
                address=address,
                node=self.node,
                description=description,
            )
            if interaction in CONSENT_CHANGES:
                for result in results:
                    events += self._consent_change(interaction, result, grant, address)
            await self.in_transaction(session, events)

        return hook

    async def in_transaction(self, session: Session, events: list[dict[str, Any]]) -> None:
        """A write's events, in its own transaction (call last, before commit)."""
        if events and self.appender is not None:
            await chain.record(session, events)

    async def record(self, events: list[dict[str, Any]]) -> None:
        """A read's (or refusal's, a token's, a login's …) events, committed before this
        returns; AuditFailed (503) if they cannot be."""
        if not events or self.appender is None:
            return
        try:
            await self.appender.record(events)
        except AuditUnavailable:
            raise AuditFailed() from None

    async def record_prepared(self, prepared: chain.Prepared) -> None:
        """:meth:`record` for events prepared already (:meth:`prepared`)."""
        if not len(prepared) or self.appender is None:
            return
        try:
            await self.appender.record_prepared(prepared)
        except AuditUnavailable:
            raise AuditFailed() from None

    async def link_access(self, conn: Conn, access: LinkAccess) -> None:
        """A shared-link access, in the access's transaction (share/manifest.py): an event
        of the link's patient naming the recipient and the outcome."""
        if self.appender is None:
            return
        refused = access.outcome != "ok"
        step = "passcode-refused" if access.outcome == "wrong_passcode" else access.kind
        event = audit.shared_link_event(
            # The link's id is its URL's last segment, a capability: only its digest is kept.
            link_id=hashlib.sha256(access.link_id.encode()).hexdigest()[:32],
            patient=access.patient_id,
            recipient=access.recipient,
            outcome=audit.MINOR_FAILURE if refused else audit.SUCCESS,
            step=step,
            address=access.address,
            reason=f"{access.kind}: {access.outcome}" if refused else None,
            node=self.node,
        )
        try:
            await chain.record(conn, event)
        except Exception as error:  # rolls the access back with it: nothing is served
            log.error("a shared-link access could not be audited (%s)", type(error).__name__)
            raise NotRecorded() from None

    async def login(
        self,
        user: str | None,
        success: bool,
        method: str,
        address: str | None,
        reason: str | None,
        client_id: str | None = None,
    ) -> None:
        """A login at the authorization UI (the IdP callback), succeeded or refused."""
        if self.appender is None:
            return
        event = audit.login_event(
            user=user,
            success=success,
            method=method,
            address=address,
            reason=reason,
            client_id=client_id,
            node=self.node,
        )
        await self.record([event])

    async def match_decision(self, claims: IdentityClaims, decision: MatchDecision) -> None:
        """An identity-match decision (auth/identity ``on_decision``): cms_smart or a login.
        A unique match is the patient's event; none or several, an event no patient owns
        listing the candidates (privacy/audit.py match_event)."""
        if self.appender is None:
            return
        event = audit.match_event(
            None,
            rule=decision.rule,
            fuzzy=not decision.exact,
            candidates=list(decision.matched_ids),
            matched=decision.patient_id if decision.outcome == MATCHED else None,
            node=self.node,
        )
        await self.record([event])
