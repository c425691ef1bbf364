"""The index rows of an AuditEvent, without FHIRPath: the audit trail's hot path.

Every audited request stores an AuditEvent with its search index rows
(docs/privacy.md, "Audit"). The generic indexer (extract.py) evaluates AuditEvent's 22 search
parameter expressions through FHIRPath: ~0.5 ms an event, as much as the secured read it
records. The R4 expressions are plain paths (R4 auditevent.html#search: ``AuditEvent.action``,
``AuditEvent.agent.who``, ``AuditEvent.entity.role`` …, ``patient`` the union of
``agent.who`` and ``entity.what`` where they resolve to a Patient), so for the shapes the node
builds (privacy/audit.py) the rows can be read straight off the JSON, typed as the
definitions type them, by the generic row builders of extract.py.

:func:`audit_event_rows` answers None — use ``extract`` — for anything else: an element or
an element's part these paths do not expect here, a reference that is not a plain relative
one, or a set of AuditEvent search parameters other than the one this was written for (a
custom SearchParameter on AuditEvent). tests/fhir/test_audit_index.py checks, over events
of every builder, that the rows equal extract()'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import orjson

from healthmesh.fhir.fhirpath.model import Node
from healthmesh.fhir.search.extract import (
    IndexRows,
    _dates,
    _references,
    _strings,
    _tokens,
)
from healthmesh.fhir.search.registry import IndexedParam, indexed_params

# The parameters (code, type) the rows below are for: R4 AuditEvent's and Resource's.
PARAMS: Final = frozenset(
    {
        ("_profile", "uri"),
        ("_security", "token"),
        ("_source", "uri"),
        ("_tag", "token"),
        ("action", "token"),
        ("address", "string"),
        ("agent", "reference"),
        ("agent-name", "string"),
        ("agent-role", "token"),
        ("altid", "token"),
        ("date", "date"),
        ("entity", "reference"),
        ("entity-name", "string"),
        ("entity-role", "token"),
        ("entity-type", "token"),
        ("outcome", "token"),
        ("patient", "reference"),
        ("policy", "uri"),
        ("site", "token"),
        ("source", "reference"),
        ("subtype", "token"),
        ("type", "token"),
    }
)
# What may be present, per level, for the rows below to be all the rows (elements no
# parameter reads — outcomeDesc, purposeOfEvent, agent.type, requestor, extension,
# entity.query, detail, source.type — may be there; agent.role, name, altId, policy,
# entity.name, source.site, meta.security … send the event the generic way).
_TOP: Final = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "type",
        "subtype",
        "action",
        "recorded",
        "outcome",
        "outcomeDesc",
        "purposeOfEvent",
        "agent",
        "source",
        "entity",
    }
)
_META: Final = frozenset({"versionId", "lastUpdated"})
_AGENT: Final = frozenset({"type", "who", "requestor", "extension", "network", "purposeOfUse"})
_NETWORK: Final = frozenset({"address", "type"})
_SOURCE: Final = frozenset({"observer", "type"})
_ENTITY: Final = frozenset({"what", "type", "role", "query", "detail"})
_REFERENCE: Final = frozenset({"reference", "identifier", "display"})
_PLAIN_REFERENCE: Final = re.compile(
    r"([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)

_checked: tuple[IndexedParam, ...] | None = None


def _params_known() -> bool:
    """Whether AuditEvent's indexed parameters are exactly :data:`PARAMS` (custom
    SearchParameters on AuditEvent change them; their rows need the generic indexer)."""
    global _checked
    params = indexed_params("AuditEvent")
    if params is _checked:
        return True
    if {(p.code, p.type) for p in params} != PARAMS:
        return False
    _checked = params
    return True


class NotIndexedHere(Exception):
    """The event has something the fast path does not index: use extract()."""


def _only(value: Any, allowed: frozenset[str]) -> Mapping[str, Any]:
    # ``type(...) is dict`` first: the node's events are dicts, and an ABC isinstance check
    # costs several times as much, dozens of times an event.
    if (type(value) is not dict and not isinstance(value, Mapping)) or not allowed.issuperset(
        value
    ):
        raise NotIndexedHere
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotIndexedHere
    return value


def _reference(value: Any) -> Mapping[str, Any]:
    ref = _only(value, _REFERENCE)
    literal = ref.get("reference")
    if literal is not None and not (
        isinstance(literal, str) and _PLAIN_REFERENCE.fullmatch(literal)
    ):
        raise NotIndexedHere
    ident = ref.get("identifier")
    if ident is not None and not isinstance(ident, Mapping):
        raise NotIndexedHere
    return ref


def plain_reference(literal: str) -> bool:
    """Whether ``literal`` is a relative reference whose rows :func:`reference_rows` gives."""
    return _PLAIN_REFERENCE.fullmatch(literal) is not None


def _is_patient(ref: Mapping[str, Any]) -> bool:
    literal = ref.get("reference")
    return isinstance(literal, str) and literal.startswith("Patient/")


# Most of an event's parts recur from event to event (its type and subtype, the node as its
# source, the calling app, the entities' types and roles, the patient): their rows are made
# once and reused. The keys are the parts' plain string values; anything else is indexed
# afresh.
_Key = str | None


@lru_cache(maxsize=4096)
def _coding_rows(param: str, system: _Key, code: _Key, display: _Key) -> IndexRows:
    coding = {k: v for k, v in (("system", system), ("code", code), ("display", display)) if v}
    rows = IndexRows()
    _tokens(param, Node(coding, "Coding", "Coding"), rows)
    return rows


@lru_cache(maxsize=4096)
def reference_rows(param: str, literal: _Key, id_system: _Key, id_value: _Key) -> IndexRows:
    """The rows of a plain Reference (a literal and/or an identifier); cached and shared:
    copy, never extend them."""
    ref: dict[str, Any] = {"reference": literal} if literal is not None else {}
    if id_system is not None or id_value is not None:
        ref["identifier"] = {
            k: v for k, v in (("system", id_system), ("value", id_value)) if v is not None
        }
    rows = IndexRows()
    _references(param, Node(ref, "Reference", "Reference"), rows)
    return rows


def _plain(value: Any) -> bool:
    return value is None or type(value) is str


def _add_coding(param: str, coding: Mapping[str, Any], rows: IndexRows) -> None:
    system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
    if _plain(system) and _plain(code) and _plain(display):
        rows.token.extend(_coding_rows(param, system, code, display).token)
    else:
        _tokens(param, Node(coding, "Coding", "Coding"), rows)


_PLAIN_IDENTIFIER: Final = frozenset({"system", "value"})


def _add_reference(param: str, ref: Mapping[str, Any], rows: IndexRows) -> None:
    literal, ident = ref.get("reference"), ref.get("identifier")
    ident = {} if ident is None else ident
    plain = (
        type(ident) is dict
        and _PLAIN_IDENTIFIER.issuperset(ident)
        and all(_plain(v) for v in (literal, ident.get("system"), ident.get("value")))
    )
    if plain:
        cached = reference_rows(param, literal, ident.get("system"), ident.get("value"))
        rows.token.extend(cached.token)
        rows.reference.extend(cached.reference)
    else:  # anything but plain strings is indexed afresh
        _references(param, Node(ref, "Reference", "Reference"), rows)


def audit_event_rows(resource: Mapping[str, Any], key: bytes | None = None) -> IndexRows | None:
    """The index rows ``extract`` would give this AuditEvent, or None when only it can say.

    ``key``: the event's :func:`recurring_key`, when the caller has made it already."""
    if resource.get("resourceType") != "AuditEvent" or not _params_known():
        return None
    try:
        return _rows(resource, recurring_key(resource) if key is None else key)
    except NotIndexedHere:
        return None


# The parts of an event that recur from request to request of one token: what it is, who
# asked (the app, the user, the organization, their address and scopes) and this node as
# its source. Only the id, the time and the entities are new in every event.
RECURRING: Final = ("type", "subtype", "action", "outcome", "agent", "source")


def recurring_key(event: Mapping[str, Any]) -> bytes:
    """The event's recurring parts serialised (orjson: a few microseconds): the key that
    their index rows, and the chain's facts of them, are made once under."""
    return orjson.dumps([event.get(name) for name in RECURRING])


@lru_cache(maxsize=4096)
def _recurring_rows(key: bytes) -> tuple[IndexRows, tuple[Mapping[str, Any], ...]] | None:
    """The rows of the recurring parts and the Patients their agents name (None: a shape
    for the generic indexer). Cached rows are shared: callers copy, never extend them."""
    parts = dict(zip(RECURRING, orjson.loads(key), strict=True))
    rows = IndexRows()
    patients: list[Mapping[str, Any]] = []
    try:
        for code in ("action", "outcome"):
            if parts[code] is not None:
                _tokens(code, Node(parts[code], "code", "code"), rows)
        if parts["type"] is not None:
            _add_coding("type", _only(parts["type"], _CODING), rows)
        for coding in _list(parts["subtype"]):
            _add_coding("subtype", _only(coding, _CODING), rows)
        for agent in _list(parts["agent"]):
            agent = _only(agent, _AGENT)
            if "who" in agent:
                who = _reference(agent["who"])
                _add_reference("agent", who, rows)
                if _is_patient(who) and who not in patients:
                    patients.append(who)
            if "network" in agent:
                address = _only(agent["network"], _NETWORK).get("address")
                if address is not None:
                    _strings("address", Node(address, "string", "string"), rows)
        if parts["source"] is not None:
            source = _only(parts["source"], _SOURCE)
            if "observer" in source:
                _add_reference("source", _reference(source["observer"]), rows)
    except NotIndexedHere:
        return None
    return rows, tuple(patients)


def _rows(event: Mapping[str, Any], key: bytes) -> IndexRows:
    _only(event, _TOP)
    if "meta" in event:
        _only(event["meta"], _META)
    recurring = _recurring_rows(key)
    if recurring is None:
        raise NotIndexedHere
    shared, agent_patients = recurring
    rows = IndexRows(
        token=list(shared.token), string=list(shared.string), reference=list(shared.reference)
    )
    if "recorded" in event:
        _dates("date", Node(event["recorded"], "instant", "instant"), rows)
    entity_rows(_list(event.get("entity")), agent_patients, rows)
    return rows


def recurring_rows(key: bytes) -> tuple[IndexRows, tuple[Mapping[str, Any], ...]] | None:
    """The index rows of an event's recurring parts (:func:`recurring_key`) and the Patients
    its agents name; None: a shape for the generic indexer (privacy/read_events.py). The
    rows are shared: copy, never extend them."""
    return _recurring_rows(key) if _params_known() else None


def entity_rows(
    entities: list[Any], agent_patients: tuple[Mapping[str, Any], ...], rows: IndexRows
) -> None:
    """Add the rows of an event's entities, and of its ``patient`` parameter (the Patients
    its agents and entities name), to ``rows``; NotIndexedHere for a shape not indexed here."""
    patients = list(agent_patients)  # the union: equal elements count once
    for entity in entities:
        entity = _only(entity, _ENTITY)
        if "what" in entity:
            what = _reference(entity["what"])
            _add_reference("entity", what, rows)
            if _is_patient(what) and what not in patients:
                patients.append(what)
        for code in ("role", "type"):
            if code in entity:
                _add_coding(f"entity-{code}", _only(entity[code], _CODING), rows)
    for who in patients:
        _add_reference("patient", who, rows)


_CODING: Final = frozenset({"system", "version", "code", "display", "userSelected"})
