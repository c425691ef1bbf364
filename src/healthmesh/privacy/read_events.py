"""The AuditEvents of reads and searches, made from per-token templates.

Every audited read records an AuditEvent before its answer leaves (docs/privacy.md,
"Audit"). Built as a dict (privacy/audit.py), then serialised, hashed and indexed
(chain.prepare_events), an event cost the server ~60 µs in a quiet process and three times
that under load: a third of what auditing added to a read (docs/PERFORMANCE.md). Yet all of
a read's event but its id, its time and its entities is the same from one request of a token
to the next — its type, subtype, action, outcome, agents and source. So those are built once
per caller and interaction, by the same builders, and serialised around placeholders, in the
order the node serves an event and in the sorted order its chain hash is taken over
(store/rows.content_hash), with their index rows (fhir/search/audit_index.py). An event is
then the template's pieces joined with its own few values.

What this makes is what the general path makes, byte for byte: the stored content, its hash,
its index rows and its chain entry (tests/privacy/test_read_events.py compares them over
every kind of caller and interaction). Events this does not cover — a refusal's description,
an interaction with no entity, custom SearchParameters on AuditEvent — take that path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import orjson

from healthmesh.auth.grant import AccessGrant
from healthmesh.fhir.fhirpath.model import Node
from healthmesh.fhir.ids import new_id
from healthmesh.fhir.search.audit_index import (
    NotIndexedHere,
    entity_rows,
    plain_reference,
    recurring_key,
    recurring_rows,
    reference_rows,
)
from healthmesh.fhir.search.extract import IndexRows, _dates
from healthmesh.fhir.security_labels import CODED_PATHS
from healthmesh.privacy import audit
from healthmesh.privacy.chain import Prepared, recurring_facts
from healthmesh.store.audit_store import Tables
from healthmesh.store.copy_rows import INDEX_KINDS
from healthmesh.store.repository import INDEX_NAMES, INDEX_TABLES
from healthmesh.store.rows import format_instant, now
from healthmesh.store.search.tables import packed as is_packed

# Placeholders for an event's own values. NUL cannot be in any value the builders are given
# (a client id, an address, a scope), and a template is only used if each placeholder
# occurs exactly once in it.
_SLOTS: Final = ("id", "updated", "recorded", "entity")
_PLACEHOLDER: Final = {slot: f"\x00healthmesh-audit-{slot}\x00" for slot in (*_SLOTS, "value")}
_JSON_PLACEHOLDER: Final = {slot: orjson.dumps(p).decode() for slot, p in _PLACEHOLDER.items()}
# Inside a JSON string (an entity's reference): the placeholder without its quotes.
_IN_STRING: Final = _JSON_PLACEHOLDER["value"][1:-1]


@dataclass(frozen=True, slots=True)
class _Pieces:
    """A serialised template: ``text[0] value[order[0]] text[1] … text[n]``."""

    text: tuple[str, ...]
    order: tuple[int, ...]  # indexes into the values, as _SLOTS (without "updated" if absent)

    @staticmethod
    def split(serialised: str, markers: Sequence[str]) -> _Pieces | None:
        """``serialised`` cut at each of ``markers`` (each must occur exactly once)."""
        found = []
        for n, marker in enumerate(markers):
            at = serialised.find(marker)
            if at < 0 or serialised.find(marker, at + 1) >= 0:
                return None
            found.append((at, n, len(marker)))
        found.sort()
        text, start = [], 0
        for at, _, length in found:
            text.append(serialised[start:at])
            start = at + length
        text.append(serialised[start:])
        return _Pieces(tuple(text), tuple(n for _, n, _ in found))

    def join(self, values: Sequence[str]) -> str:
        out = [self.text[0]]
        for n, piece in zip(self.order, self.text[1:], strict=True):
            out.append(values[n])
            out.append(piece)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Template:
    served: _Pieces  # slots: id, updated, recorded, entity
    canonical: _Pieces  # slots: id, recorded, entity (no meta: rows.content_hash)
    # The recurring parts' index rows (and the ``patient`` rows of the Patients its agents
    # name): the packed ones serialised per kind, the real ones as (kind, row).
    packed: dict[str, list[str]]
    real: tuple[tuple[str, tuple[Any, ...]], ...]
    agent_patients: tuple[Any, ...]  # the Patients its agents name (``patient``'s union)
    facts: tuple[str, str | None, str | None, bool]  # kind, client, address, system access
    action: str
    outcome: str


def _template(
    grant: AccessGrant, interaction: str, outcome: str, address: str | None, node: str
) -> _Template | None:
    if "AuditEvent" in CODED_PATHS:  # labels would be added per event: not a constant part
        return None
    proto = audit.rest_event(
        grant,
        interaction,
        [],
        outcome,
        patient=None,
        query=None,
        address=address,
        description=None,
        node=node,
        recorded=None,
    )
    key = recurring_key(proto)
    recurring = recurring_rows(key)
    if recurring is None or "entity" in proto:
        return None
    proto["id"] = _PLACEHOLDER["id"]
    proto["recorded"] = _PLACEHOLDER["recorded"]
    proto["entity"] = _PLACEHOLDER["entity"]
    # The stored order (store/rows.prepare): resourceType, id, meta first, then the rest.
    served: dict[str, Any] = {
        "resourceType": proto["resourceType"],
        "id": proto["id"],
        "meta": {"versionId": "1", "lastUpdated": _PLACEHOLDER["updated"]},
    }
    served.update((k, v) for k, v in proto.items() if k not in served)
    served_pieces = _Pieces.split(
        orjson.dumps(served).decode(), [_JSON_PLACEHOLDER[slot] for slot in _SLOTS]
    )
    canonical_pieces = _Pieces.split(
        orjson.dumps(proto, option=orjson.OPT_SORT_KEYS).decode(),
        [_JSON_PLACEHOLDER[slot] for slot in ("id", "recorded", "entity")],
    )
    if served_pieces is None or canonical_pieces is None:
        return None
    shared, agent_patients = recurring
    rows = IndexRows(
        token=list(shared.token), string=list(shared.string), reference=list(shared.reference)
    )
    entity_rows([], agent_patients, rows)  # the agents' Patients, for ``patient``
    packed, real = _split_rows(rows)
    return _Template(
        served_pieces,
        canonical_pieces,
        packed,
        real,
        agent_patients,
        recurring_facts(key),
        str(proto["action"]),
        str(proto["outcome"]),
    )


def _split_rows(rows: IndexRows) -> tuple[dict[str, list[str]], tuple[tuple[str, Any], ...]]:
    """Rows as the trail stores them (store/audit_store.py): the packed ones serialised as
    ``audit_index.rows`` holds them, per kind; the real parameters' as (kind, row)."""
    packed: dict[str, list[str]] = {}
    real: list[tuple[str, Any]] = []
    for kind in INDEX_KINDS:
        for row in getattr(rows, kind):
            if is_packed(row[0]):
                packed.setdefault(kind, []).append(orjson.dumps([*row, None]).decode())
            else:
                real.append((kind, row))
    if rows.composite:
        raise ValueError("no AuditEvent parameter is a composite")
    return packed, tuple(real)


@lru_cache(maxsize=4096)
def _cached_template(
    caller: tuple[str, str, str | None, str | None, str | None],
    interaction: str,
    outcome: str,
    address: str | None,
    node: str,
) -> _Template | None:
    client_id, scope, fhir_user, organization, purpose = caller
    grant = AccessGrant(
        client_id=client_id,
        scope=scope,
        fhir_user=fhir_user,
        organization=organization,
        purpose_of_use=purpose,
    )
    return _template(grant, interaction, outcome, address, node)


def _caller(grant: AccessGrant) -> tuple[str, str, str | None, str | None, str | None]:
    """What of a grant its events' recurring parts say (audit.agents): not the token."""
    return (grant.client_id, grant.scope, grant.fhir_user, grant.organization, grant.purpose_of_use)


@dataclass(frozen=True, slots=True)
class _EntityShape:
    """An entity of one kind (the patient, a resource, the query) around its one value."""

    served: _Pieces
    canonical: _Pieces
    tokens: tuple[str, ...]  # its entity-role and entity-type rows, serialised (packed)

    def texts(self, value: str) -> tuple[str, str]:
        inner = orjson.dumps(value).decode()[1:-1]
        return self.served.join((inner,)), self.canonical.join((inner,))


@lru_cache(maxsize=8)
def _entity_shape(kind: str) -> _EntityShape | None:
    value = _PLACEHOLDER["value"]
    if kind == "patient":
        proto = audit.patient_entity(value)
        proto["what"] = {"reference": value}
    elif kind == "resource":
        proto = audit.resource_entity(audit.Touched("Resource", "id"))
        proto["what"] = {"reference": value}
    else:
        proto = audit.query_entity("")
        proto["query"] = value
    rows = IndexRows()
    try:
        entity_rows([{k: v for k, v in proto.items() if k != "what"}], (), rows)
    except NotIndexedHere:
        return None
    served = _Pieces.split(orjson.dumps(proto).decode(), [_IN_STRING])
    canonical = _Pieces.split(
        orjson.dumps(proto, option=orjson.OPT_SORT_KEYS).decode(), [_IN_STRING]
    )
    packed, real = _split_rows(rows)
    if served is None or canonical is None or real or set(packed) - {"token"}:
        return None
    return _EntityShape(served, canonical, tuple(packed.get("token", ())))


class _EventRows:
    """One event's index rows as the trail stores them: packed rows serialised per kind
    (the template's, then the event's own), the real parameters' as (kind, row)."""

    __slots__ = ("packed", "real")

    def __init__(self, template: _Template) -> None:
        self.packed = {kind: list(rows) for kind, rows in template.packed.items()}
        self.real = list(template.real)

    def reference(self, param: str, literal: str) -> None:
        for row in reference_rows(param, literal, None, None).reference:
            if is_packed(param):
                self.packed.setdefault("reference", []).append(orjson.dumps([*row, None]).decode())
            else:
                self.real.append(("reference", row))

    def packed_json(self) -> orjson.Fragment:
        """``audit_index.rows``: {kind: [[values…, elem], …]} (migration 0025)."""
        kinds = (f'"{kind}":[{",".join(rows)}]' for kind, rows in self.packed.items() if rows)
        return orjson.Fragment("{" + ",".join(kinds) + "}")


def _entities(
    template: _Template, patient: str | None, resources: Sequence[audit.Touched], query: str | None
) -> tuple[str, str, _EventRows] | None:
    """The event's entity array, served and canonical, and its index rows, as
    audit.rest_event and audit_index.entity_rows make them."""
    shapes = _entity_shape("patient"), _entity_shape("resource"), _entity_shape("query")
    patient_shape, resource_shape, query_shape = shapes
    if patient_shape is None or resource_shape is None or query_shape is None:
        return None
    served: list[str] = []
    canonical: list[str] = []
    rows = _EventRows(template)
    tokens = rows.packed.setdefault("token", [])

    def add(shape: _EntityShape, value: str, reference: bool) -> None:
        text, sorted_text = shape.texts(value)
        served.append(text)
        canonical.append(sorted_text)
        tokens.extend(shape.tokens)
        if reference:
            rows.reference("entity", value)

    # The patient's entity, then each resource's: references the rows can be read off.
    literals = [f"Patient/{patient}"] if patient else []
    literals += [t.reference for t in resources]
    if not all(plain_reference(literal) for literal in literals):
        return None
    mentioned: list[str] = []
    for n, literal in enumerate(literals):
        add(patient_shape if n == 0 and patient else resource_shape, literal, True)
        if literal.startswith("Patient/") and literal not in mentioned:
            mentioned.append(literal)
    if query is not None:
        add(query_shape, audit.query_entity(query)["query"], False)
    if not served:
        return None  # an event without entity has no "entity" member at all
    # ``patient``: the agents' Patients (in the template's rows), then the entities' others.
    for literal in mentioned:
        if {"reference": literal} not in template.agent_patients:
            rows.reference("patient", literal)
    return f"[{','.join(served)}]", f"[{','.join(canonical)}]", rows


def interaction_prepared(
    grant: AccessGrant,
    interaction: str,
    touched: Sequence[audit.Touched],
    outcome: str,
    *,
    query: str | None = None,
    address: str | None = None,
    node: str = "healthmesh",
    at: datetime | None = None,
    ids: Sequence[str] | None = None,
) -> Prepared | None:
    """The prepared events (chain.Prepared) of audit.interaction_events with these
    arguments, made from the caller's template; None when the general path must make them.

    ``at``: when they are stored and recorded (now); ``ids``: their ids (fresh), for tests
    that compare the two paths."""
    if interaction not in audit.INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}")
    template = _cached_template(_caller(grant), interaction, outcome, address, node)
    if template is None:
        return None
    at = at or now()
    stamp = format_instant(at)
    stamp_json = orjson.dumps(stamp).decode()
    tables: Tables = {"resource": [], "audit_index": []}
    entries: list[dict[str, Any]] = []
    kind, client, address_fact, system_access = template.facts
    date_rows = IndexRows()
    _dates("date", Node(stamp, "instant", "instant"), date_rows)
    for n, (patient, resources, part_query) in enumerate(audit.event_parts(grant, touched, query)):
        made = _entities(template, patient, resources, part_query)
        if made is None:
            return None
        served_entities, canonical_entities, rows = made
        id = ids[n] if ids is not None else new_id()
        id_json = orjson.dumps(id).decode()
        content = template.served.join((id_json, stamp_json, stamp_json, served_entities))
        canonical = template.canonical.join((id_json, stamp_json, canonical_entities))
        digest = hashlib.sha256(canonical.encode()).digest()
        tables["resource"].append(
            {
                "res_type": "AuditEvent",
                "id": id,
                "version_id": 1,
                "last_updated": at,
                "deleted": False,
                "patient_id": patient,
                "content_hash": "\\x" + digest.hex(),
                "content": content,
            }
        )
        tables["audit_index"].append(
            {"res_id": id, "patient_id": patient, "rows": rows.packed_json()}
        )
        for index_kind, row in (*rows.real, *(("date", r) for r in date_rows.date)):
            tables.setdefault(INDEX_TABLES[index_kind][0], []).append(
                dict(
                    zip(
                        INDEX_NAMES[index_kind],
                        ("AuditEvent", id, *row, patient, None),
                        strict=True,
                    )
                )
            )
        entries.append(
            {
                "event_id": id,
                "recorded": stamp,
                "event_hash": digest.hex(),
                "kind": kind,
                "client_id": client,
                "address": address_fact,
                "patient_id": patient,
                "action": template.action,
                "outcome": template.outcome,
                "system_access": system_access,
                "object": None,
                "types": tuple(sorted({t.res_type for t in resources})),
            }
        )
    return Prepared(tables, entries)
