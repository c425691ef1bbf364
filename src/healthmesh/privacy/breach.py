"""Breach signals over the audit trail, and the report a breach notification needs.

Detectors (each over one window, default the last hour; thresholds in :class:`Thresholds`):

- ``many-patients``: a client without a ``system/`` scope was given the data of many distinct
  patients — a patient app sees one patient, a clinician's app a panel, not a population;
- ``burst``: a client's volume far above its own average per window over the baseline;
- ``refusals``: repeated refused requests (failed outcomes) from one client or address;
- ``passcode-guessing``: repeated refused accesses to one shared link, or from one address.

An alert is an AuditEvent of its own (DICOM 110113 Security Alert, raised once per window per
subject), a log line without PHI (detector, alert id, count; a client id, never a patient or
an address), and, when configured, a JSON POST to a webhook.

HIPAA §164.404 notification needs, per affected individual, what was disclosed:
:func:`breach_report` lists the patients whose data a client was given, with the resource
types (and data categories) and when.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from healthmesh.fhir.consent import DATA_CATEGORIES
from healthmesh.privacy import chain
from healthmesh.privacy.audit import alert_event
from healthmesh.store import audit_store
from healthmesh.store.audit_store import Conn

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    window: timedelta = timedelta(hours=1)
    distinct_patients: int = 50
    burst_factor: float = 10.0  # this window vs the client's average window in the baseline
    burst_minimum: int = 500  # never a burst below this many events in the window
    baseline: timedelta = timedelta(days=7)
    refusals: int = 20
    passcode_failures: int = 5


@dataclass(frozen=True, slots=True)
class Alert:
    detector: str
    subject: str  # client:<id>, address:<ip>, link:<id>
    count: int
    detail: str  # names no patient

    @property
    def key(self) -> str:
        return f"{self.detector}:{self.subject}"


async def detect(
    conn: Conn, *, thresholds: Thresholds = Thresholds(), at: datetime | None = None
) -> list[Alert]:
    """Every signal in the window ending at ``at`` (default now)."""
    t = thresholds
    until = at or datetime.now(UTC)
    since = until - t.window
    alerts = [
        Alert("many-patients", subject, n, "distinct patients read without a system scope")
        for subject, n in await audit_store.many_patients(conn, since, until, t.distinct_patients)
    ]
    windows = max(t.baseline / t.window, 1.0)
    start = since - t.baseline
    for client, now_count, before in await audit_store.volumes(
        conn, start, since, until, t.burst_minimum
    ):
        usual = before / windows
        if now_count > t.burst_factor * max(usual, 1.0):
            alerts.append(
                Alert(
                    "burst",
                    f"client:{client}",
                    now_count,
                    f"events in the window, against {usual:.1f} on average",
                )
            )
    alerts += [
        Alert("refusals", subject, n, "refused requests")
        for subject, n in await audit_store.refusals(conn, since, until, t.refusals)
    ]
    alerts += [
        Alert("passcode-guessing", subject, n, "refused shared-link accesses")
        for subject, n in await audit_store.passcode_failures(
            conn, since, until, t.passcode_failures
        )
    ]
    return alerts


async def raise_alerts(
    conn: Conn,
    alerts: list[Alert],
    *,
    window: timedelta = timedelta(hours=1),
    webhook: str | None = None,
    node: str = "healthmesh",
) -> list[Alert]:
    """Record, log and POST each alert not already raised within ``window``; the new ones."""
    raised = []
    since = datetime.now(UTC) - window
    for alert in alerts:
        if await audit_store.alerted(conn, alert.key, since):
            continue
        event = alert_event(
            detector=alert.detector,
            subject=alert.subject,
            count=alert.count,
            detail=alert.detail,
            node=node,
        )
        await chain.record(conn, event)
        # Clients are not people; addresses and links stay in the (access-controlled) event.
        shown = alert.subject if alert.subject.startswith("client:") else "see the event"
        log.warning(
            "audit alert %s (%s): %d %s, AuditEvent/%s",
            alert.detector,
            shown,
            alert.count,
            alert.detail,
            event["id"],
        )
        if webhook:
            await _post(webhook, alert, str(event["id"]), node)
        raised.append(alert)
    return raised


async def _post(url: str, alert: Alert, event_id: str, node: str) -> None:
    body = {
        "node": node,
        "detector": alert.detector,
        "subject": alert.subject,
        "count": alert.count,
        "detail": alert.detail,
        "auditEvent": f"AuditEvent/{event_id}",
    }
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(url, json=body)
            response.raise_for_status()
    except httpx.HTTPError as failed:
        # The alert is recorded either way; a dead webhook must not hide it.
        log.warning("audit alert webhook failed: %s", type(failed).__name__)


async def scan(
    conn: Conn,
    *,
    thresholds: Thresholds = Thresholds(),
    webhook: str | None = None,
    node: str = "healthmesh",
) -> list[Alert]:
    """Detect and raise: what a periodic job (``healthmesh audit scan``) runs."""
    found = await detect(conn, thresholds=thresholds)
    return await raise_alerts(conn, found, window=thresholds.window, webhook=webhook, node=node)


# --- breach report --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Exposure:
    patient: str
    events: int
    first: datetime
    last: datetime
    types: tuple[str, ...]
    categories: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "patient": f"Patient/{self.patient}",
            "events": self.events,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "resourceTypes": list(self.types),
            "dataCategories": list(self.categories),
        }


def categories_of(types: list[str]) -> tuple[str, ...]:
    """The data categories (docs/privacy.md) that cover some of these resource types."""
    found = set()
    for code, category in DATA_CATEGORIES.items():
        covered = set(category.types) | {t for t, _ in category.by_category}
        if covered & set(types):
            found.add(code)
    return tuple(sorted(found))


async def breach_report(
    conn: Conn, client_id: str, since: datetime, until: datetime | None = None
) -> list[Exposure]:
    """The patients whose data ``client_id`` was given in [since, until), with what."""
    rows = await audit_store.exposures(conn, client_id, since, until or datetime.now(UTC))
    return [
        Exposure(patient, n, first, last, tuple(types), categories_of(types))
        for patient, n, first, last, types in rows
    ]
