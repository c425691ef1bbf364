"""FHIR R4 AuditEvents for what happens on the node: plain functions from facts to a resource.

Shapes follow the R4 AuditEvent resource (auditevent.html) and IHE Basic Audit Log Patterns
(BALP): ``type`` from DICOM / audit-event-type, ``subtype`` the FHIR restful interaction,
``action`` C/R/U/D/E, ``outcome`` 0/4/8, ``purposeOfEvent`` v3 ActReason from the grant,
``agent`` the app, the user and the organization, ``source`` this node, ``entity`` the patient
(role 1), every resource touched (role 4) and, for a search, the query (role 24, base64).

One event has at most one patient (BALP: an access spanning several patients is recorded as
one event per patient, :func:`interaction_events`), because the event is stored in that
patient's compartment and is what the patient reads as "who looked at my record".

Nothing here does I/O; :mod:`healthmesh.privacy.chain` stores the events. No token, code,
secret or id_token content is ever put into an event.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from healthmesh.auth.grant import AccessGrant
from healthmesh.fhir.definitions import patient_compartment
from healthmesh.fhir.ids import new_id
from healthmesh.fhir.search.extract import extract_param
from healthmesh.store.rows import format_instant, now

# --- code systems ---------------------------------------------------------------------------
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
# This node's own codes, where DICOM and HL7 have none (consent, matching, links, purge).
HM_EVENT = "https://healthmesh.dev/fhir/CodeSystem/audit-event"
HM_AGENT = "https://healthmesh.dev/fhir/CodeSystem/audit-agent"
SCOPE_EXTENSION = "https://healthmesh.dev/fhir/StructureDefinition/audit-scope"
CLIENT_ID = "urn:healthmesh:client-id"
ORGANIZATION_ID = "urn:healthmesh:organization-id"
NODE_ID = "urn:healthmesh:node"
GRANT_ID = "urn:healthmesh:grant-id"
LINK_ID = "urn:healthmesh:shared-link"

# R4 audit-event-outcome.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"

# restful-interaction code -> AuditEvent.action (R4 audit-event-action; BALP: queries are E).
INTERACTIONS: dict[str, str] = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "capabilities": "R",
    "search-type": "E",
    "search-system": "E",
    "search-compartment": "E",
    "operation": "E",
    "batch": "E",
    "transaction": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
}

# What AuditEvent.type code each kind of event carries, and back (chain facts, breach).
KINDS: dict[str, tuple[str, str, str]] = {
    "rest": (EVENT_TYPE, "rest", "RESTful Operation"),
    "login": (DCM, "110114", "User Authentication"),
    "token": (HM_EVENT, "token", "Access token issuance"),
    "consent": (HM_EVENT, "consent", "Consent change"),
    "match": (HM_EVENT, "identity-match", "Identity match decision"),
    "shared-link": (HM_EVENT, "shared-link", "Shared link access"),
    "alert": (DCM, "110113", "Security Alert"),
    "purge": (HM_EVENT, "audit-purge", "Audit retention purge"),
    "export": (DCM, "110106", "Export"),  # bulk export files served (export/audit_events.py)
}
_KIND_OF_CODE = {(system, code): kind for kind, (system, code, _) in KINDS.items()}


def kind_of(event: Mapping[str, Any]) -> str:
    """The kind (a key of :data:`KINDS`) of an event built here; 'other' otherwise."""
    t = event.get("type") or {}
    return _KIND_OF_CODE.get((str(t.get("system")), str(t.get("code"))), "other")


def outcome_of_status(status: int) -> str:
    """An HTTP status as an R4 outcome: 2xx/3xx success, 4xx minor, 5xx serious failure."""
    if status < 400:
        return SUCCESS
    return MINOR_FAILURE if status < 500 else SERIOUS_FAILURE


# --- what was touched -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Touched:
    """A resource an interaction touched; ``patient``: the id of the Patient who owns it."""

    res_type: str
    id: str
    version_id: str | None = None
    patient: str | None = None

    @staticmethod
    def of(resource: Mapping[str, Any]) -> Touched:
        """From a served resource: its type, id, version and compartment owner."""
        meta = resource.get("meta") or {}
        version = meta.get("versionId") if isinstance(meta, Mapping) else None
        return Touched(
            str(resource.get("resourceType")),
            str(resource.get("id")),
            str(version) if version is not None else None,
            owner(resource),
        )

    @property
    def reference(self) -> str:
        base = f"{self.res_type}/{self.id}"
        return f"{base}/_history/{self.version_id}" if self.version_id else base


def touched_in(bundle: Mapping[str, Any]) -> list[Touched]:
    """Every resource a Bundle served (search matches and includes, history versions, the
    entries of $everything), for the events of the interaction that answered it."""
    found = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, orjson.Fragment):
            # Served as stored bytes (interactions/bundles.py); orjson can only give them back
            # by serialising the fragment.
            resource = orjson.loads(orjson.dumps(resource))
        if isinstance(resource, Mapping) and resource.get("resourceType") != "OperationOutcome":
            found.append(Touched.of(resource))
    return found


def owner(resource: Mapping[str, Any]) -> str | None:
    """The Patient whose compartment holds ``resource`` (as fhir/compartment.py decides)."""
    res_type = str(resource.get("resourceType"))
    if res_type == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for param in patient_compartment().get(res_type, ()):
        for _, target_type, target_id, _ in extract_param(resource, param).reference:
            if target_type == "Patient" and target_id:
                return str(target_id)
    return None


# --- building blocks ------------------------------------------------------------------------
def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _purpose(purpose: str | None) -> list[dict[str, Any]]:
    return [{"coding": [_coding(ACT_REASON, purpose)]}] if purpose else []


def _app_agent(
    client_id: str, *, requestor: bool, address: str | None, scope: str | None
) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {"coding": [_coding(DCM, "110150", "Application")]},
        "who": {"identifier": {"system": CLIENT_ID, "value": client_id}},
        "requestor": requestor,
    }
    if scope:
        agent["extension"] = [{"url": SCOPE_EXTENSION, "valueString": scope}]
    if address:
        agent["network"] = {"address": address, "type": "2"}  # 2: IP address
    return agent


def agents(
    grant: AccessGrant | None, *, address: str | None = None, client_id: str | None = None
) -> list[dict[str, Any]]:
    """agent[]: the app (with its granted scope and network address), the user (fhirUser)
    and the hl7-b2b organization. The human user, or else the organization, or else the app
    is the ``requestor``; the purpose of use sits on the requestor."""
    client = grant.client_id if grant is not None else client_id
    if grant is None:
        if client:
            return [_app_agent(client, requestor=True, address=address, scope=None)]
        if address:  # a caller that did not (or could not) say who it is
            return [
                {
                    "type": {"coding": [_coding(DCM, "110150", "Application")]},
                    "who": {"display": "unidentified client"},
                    "requestor": True,
                    "network": {"address": address, "type": "2"},
                }
            ]
        return []
    user, org = grant.fhir_user, grant.organization
    found = [
        _app_agent(grant.client_id, requestor=not (user or org), address=address, scope=grant.scope)
    ]
    if org:
        found.append(
            {
                "type": {"coding": [_coding(HM_AGENT, "organization", "Requesting organization")]},
                "who": {"identifier": {"system": ORGANIZATION_ID, "value": org}},
                "requestor": not user,
            }
        )
    if user:
        found.append(
            {
                "type": {"coding": [_coding(ROLE_TYPE, "humanuser", "human user")]},
                "who": {"reference": user},
                "requestor": True,
            }
        )
    purpose = _purpose(grant.purpose_of_use)
    if purpose:
        for agent in found:
            if agent["requestor"]:
                agent["purposeOfUse"] = purpose
    return found


def source(node: str) -> dict[str, Any]:
    """source: this node, an application server (security-source-type 4)."""
    return {
        "observer": {"identifier": {"system": NODE_ID, "value": node}, "display": node},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }


def patient_entity(patient: str) -> dict[str, Any]:
    return {
        "what": {"reference": f"Patient/{patient}"},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient"),
    }


def resource_entity(touched: Touched) -> dict[str, Any]:
    return {
        "what": {"reference": touched.reference},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
    }


def query_entity(query: str) -> dict[str, Any]:
    """The query as sent (BALP: base64 in entity.query; the query may name the patient)."""
    return {
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "24", "Query"),
        "query": base64.b64encode(query.encode()).decode(),
    }


def _identifier_entity(system: str, value: str, role: tuple[str, str]) -> dict[str, Any]:
    return {
        "what": {"identifier": {"system": system, "value": value}},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, *role),
    }


def event(
    kind: str,
    *,
    action: str,
    outcome: str,
    node: str,
    subtype: Sequence[dict[str, Any]] = (),
    agent: Sequence[dict[str, Any]] = (),
    entity: Sequence[dict[str, Any]] = (),
    purpose: str | None = None,
    description: str | None = None,
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """An AuditEvent with a fresh id. ``description`` becomes outcomeDesc: say what failed,
    never put a credential or clinical content in it."""
    system, code, display = KINDS[kind]
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": _coding(system, code, display),
    }
    if subtype:
        resource["subtype"] = list(subtype)
    resource["action"] = action
    resource["recorded"] = format_instant(recorded or now())
    resource["outcome"] = outcome
    if description:
        resource["outcomeDesc"] = description
    if purpose:
        resource["purposeOfEvent"] = _purpose(purpose)
    # R4 requires at least one agent: the node itself acts when nobody else is known.
    resource["agent"] = list(agent) or [
        {
            "type": {"coding": [_coding(DCM, "110150", "Application")]},
            "who": {"identifier": {"system": NODE_ID, "value": node}},
            "requestor": False,
        }
    ]
    resource["source"] = source(node)
    if entity:
        resource["entity"] = list(entity)
    return resource


# --- FHIR interactions ----------------------------------------------------------------------
def interaction_event(
    grant: AccessGrant | None,
    interaction: str,
    touched: Iterable[Touched],
    outcome: str,
    *,
    patient: str | None = None,
    query: str | None = None,
    address: str | None = None,
    description: str | None = None,
    node: str = "healthmesh",
    recorded: datetime | None = None,
) -> dict[str, Any]:
    """One AuditEvent for a FHIR interaction (``interaction``: a key of :data:`INTERACTIONS`)
    by ``grant`` (None: --open or an internal job) that touched ``touched``.

    ``patient`` is whose data it is; by default the one owner of the touched resources, or
    else the grant's patient context. ``query``: the search's query string (entity role 24).
    """
    resources = list(touched)
    if patient is None:
        owners = {t.patient for t in resources if t.patient is not None}
        if len(owners) > 1:
            raise ValueError("resources of several patients: use interaction_events()")
        patient = next(iter(owners), None) or (grant.patient if grant is not None else None)
    return rest_event(
        grant,
        interaction,
        resources,
        outcome,
        patient=patient,
        query=query,
        address=address,
        description=description,
        node=node,
        recorded=recorded,
    )


def rest_event(
    grant: AccessGrant | None,
    interaction: str,
    resources: Sequence[Touched],
    outcome: str,
    *,
    patient: str | None,
    query: str | None,
    address: str | None,
    description: str | None,
    node: str,
    recorded: datetime | None,
) -> dict[str, Any]:
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}")
    entities = [patient_entity(patient)] if patient else []
    entities += [resource_entity(t) for t in resources]
    if query is not None:
        entities.append(query_entity(query))
    return event(
        "rest",
        action=INTERACTIONS[interaction],
        outcome=outcome,
        node=node,
        subtype=[_coding(INTERACTION, interaction, interaction)],
        agent=agents(grant, address=address),
        entity=entities,
        purpose=grant.purpose_of_use if grant is not None else None,
        description=description,
        recorded=recorded,
    )


def interaction_events(
    grant: AccessGrant | None,
    interaction: str,
    touched: Iterable[Touched],
    outcome: str,
    *,
    query: str | None = None,
    address: str | None = None,
    description: str | None = None,
    node: str = "healthmesh",
    recorded: datetime | None = None,
) -> list[dict[str, Any]]:
    """The events for one interaction: one per patient whose data it touched (IHE BALP).

    With one patient (or none) that is :func:`interaction_event`. With several, each
    patient's event names only that patient's resources and leaves the query out (a query
    can name other patients: ``Observation?patient=a,b``); the query and the resources no
    patient owns go into one more event that no patient owns, for the node's auditors. So
    every patient finds, in their own compartment, every access to their data, and never
    learns who else the same request was about.
    """
    return [
        rest_event(
            grant,
            interaction,
            resources,
            outcome,
            patient=patient,
            query=part_query,
            address=address,
            description=description,
            node=node,
            recorded=recorded,
        )
        for patient, resources, part_query in event_parts(grant, touched, query)
    ]


EventPart = tuple[str | None, list[Touched], str | None]


def event_parts(
    grant: AccessGrant | None, touched: Iterable[Touched], query: str | None
) -> list[EventPart]:
    """(patient, resources, query) of each event of one interaction, as
    :func:`interaction_events` splits it (privacy/read_events.py makes the same events)."""
    by_patient: dict[str | None, list[Touched]] = {}
    for t in touched:
        by_patient.setdefault(t.patient, []).append(t)
    shared = by_patient.pop(None, [])
    if len(by_patient) <= 1:
        owner = next(iter(by_patient), None)
        mine = by_patient.get(owner, []) if owner is not None else []
        patient = owner or (grant.patient if grant is not None else None)
        return [(patient, mine + shared, query)]
    parts: list[EventPart] = [(patient, list(r), None) for patient, r in by_patient.items()]
    parts.append((None, shared, query))
    return parts


# --- other events ---------------------------------------------------------------------------
def token_event(
    *,
    client_id: str | None,
    issued: bool,
    grant_type: str,
    grant: AccessGrant | None = None,
    reason: str | None = None,
    address: str | None = None,
    node: str = "healthmesh",
) -> dict[str, Any]:
    """A token issued (``grant`` is what it grants) or refused (``reason``: the RFC 6749
    error description sent to the client — never the assertion, code or token)."""
    patient = grant.patient if grant is not None else None
    entity = [patient_entity(patient)] if patient else []
    if grant is not None and grant.grant_id:
        entity.append(_identifier_entity(GRANT_ID, grant.grant_id, ("13", "Security Resource")))
    subtype = _coding(HM_EVENT, "token-issued" if issued else "token-refused")
    return event(
        "token",
        action="E",
        outcome=SUCCESS if issued else MINOR_FAILURE,
        node=node,
        subtype=[subtype, _coding(HM_EVENT, f"grant-type:{grant_type}")],
        agent=agents(grant, address=address, client_id=client_id),
        entity=entity,
        purpose=grant.purpose_of_use if grant is not None else None,
        description=reason,
    )


def login_event(
    *,
    user: str | None,
    success: bool,
    method: str,
    address: str | None = None,
    reason: str | None = None,
    client_id: str | None = None,
    node: str = "healthmesh",
) -> dict[str, Any]:
    """A login to the node's authorization UI (DICOM 110114 / 110122 Login). ``user``: the
    fhirUser reference when known; ``method``: passkey, totp, idp:<issuer> …"""
    agent: list[dict[str, Any]] = []
    if user:
        agent.append(
            {
                "type": {"coding": [_coding(ROLE_TYPE, "humanuser", "human user")]},
                "who": {"reference": user},
                "requestor": True,
                **({"network": {"address": address, "type": "2"}} if address else {}),
            }
        )
    if client_id:
        agent.append(_app_agent(client_id, requestor=not user, address=address, scope=None))
    patient = user.removeprefix("Patient/") if user and user.startswith("Patient/") else None
    return event(
        "login",
        action="E",
        outcome=SUCCESS if success else MINOR_FAILURE,
        node=node,
        subtype=[_coding(DCM, "110122", "Login"), _coding(HM_EVENT, f"method:{method}")],
        agent=agent
        or [
            {
                "type": {"coding": [_coding(ROLE_TYPE, "humanuser", "human user")]},
                "who": {"display": "unidentified user"},
                "requestor": True,
                **({"network": {"address": address, "type": "2"}} if address else {}),
            }
        ],
        entity=[patient_entity(patient)] if patient else [],
        description=reason,
    )


def consent_event(
    grant: AccessGrant | None,
    *,
    consent_id: str,
    patient: str,
    change: str,
    outcome: str = SUCCESS,
    address: str | None = None,
    node: str = "healthmesh",
) -> dict[str, Any]:
    """A patient-privacy Consent created, updated or revoked (``change``: create, update,
    revoke): what the patient (or their app) decided about their record."""
    action = {"create": "C", "update": "U", "revoke": "D"}[change]
    return event(
        "consent",
        action=action,
        outcome=outcome,
        node=node,
        subtype=[_coding(HM_EVENT, f"consent-{change}")],
        agent=agents(grant, address=address),
        entity=[
            patient_entity(patient),
            {
                "what": {"reference": f"Consent/{consent_id}"},
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
            },
        ],
        purpose=grant.purpose_of_use if grant is not None else None,
    )


def match_event(
    grant: AccessGrant | None,
    *,
    rule: str | None,
    fuzzy: bool,
    candidates: Sequence[str],
    matched: str | None,
    address: str | None = None,
    node: str = "healthmesh",
) -> dict[str, Any]:
    """An identity-match decision ($match or cms_smart): initiator, rule, exact/fuzzy,
    candidates, uniqueness (SPECS §4). A unique match is the matched patient's event and
    names only them; otherwise the candidates are listed in an event no patient owns (a
    patient must not learn that a stranger's search also considered them)."""
    details = [
        {"type": "rule", "valueString": rule or "none"},
        {"type": "fuzzy", "valueString": "true" if fuzzy else "false"},
        {"type": "candidates", "valueString": str(len(candidates))},
        {"type": "unique", "valueString": "true" if matched else "false"},
    ]
    decision = {
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "24", "Query"),
        "detail": details,
    }
    if matched:
        entities = [decision, patient_entity(matched)]
    else:
        entities = [decision, *(resource_entity(Touched("Patient", p)) for p in candidates)]
    return event(
        "match",
        action="E",
        outcome=SUCCESS,
        node=node,
        subtype=[_coding(HM_EVENT, "match-unique" if matched else "match-none")],
        agent=agents(grant, address=address),
        entity=entities,
        purpose=grant.purpose_of_use if grant is not None else None,
    )


def shared_link_event(
    *,
    link_id: str,
    patient: str,
    recipient: str,
    outcome: str,
    step: str,
    address: str | None = None,
    touched: Iterable[Touched] = (),
    reason: str | None = None,
    node: str = "healthmesh",
) -> dict[str, Any]:
    """An access to a SMART Health Link (``step``: manifest, file, passcode-refused …).

    ``link_id`` is the link's internal, non-secret id: never the link URL, its key or a
    passcode (the URL is the capability). ``recipient`` is what the requester said it is.
    """
    return event(
        "shared-link",
        action="R",
        outcome=outcome,
        node=node,
        subtype=[_coding(HM_EVENT, f"shl-{step}")],
        agent=[
            {
                "type": {"coding": [_coding(HM_AGENT, "shl-recipient", "Link recipient")]},
                "who": {"display": recipient[:200]},
                "requestor": True,
                **({"network": {"address": address, "type": "2"}} if address else {}),
            }
        ],
        entity=[
            patient_entity(patient),
            _identifier_entity(LINK_ID, link_id, ("13", "Security Resource")),
            *(resource_entity(t) for t in touched),
        ],
        description=reason,
    )


def purge_event(*, first: int, last: int, removed: int, cutoff: str, node: str) -> dict[str, Any]:
    """Retention removed chain entries ``first``–``last`` (recorded before ``cutoff``)."""
    return event(
        "purge",
        action="D",
        outcome=SUCCESS,
        node=node,
        description=f"retention removed {removed} audit entries ({first}–{last}) recorded before {cutoff}",
    )


def alert_event(
    *, detector: str, subject: str, count: int, detail: str, node: str
) -> dict[str, Any]:
    """A breach signal (DICOM 110113 Security Alert). ``subject``: client:<id>,
    address:<ip> or link:<id>; ``detail`` names no patient."""
    return event(
        "alert",
        action="E",
        outcome=SERIOUS_FAILURE,
        node=node,
        subtype=[_coding(HM_EVENT, f"alert-{detector}")],
        entity=[
            _identifier_entity(
                "urn:healthmesh:alert-subject", f"{detector}:{subject}", ("13", "Security Resource")
            )
        ],
        description=f"{detail} ({count})",
    )
