"""Reads' AuditEvents from templates (privacy/read_events.py) are the general path's events:
the same stored content, hash, index rows and chain entry, for every kind of caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit, chain, read_events
from healthmesh.store import audit_store
from healthmesh.store.rows import content_hash, prepare

AT = datetime(2026, 12, 3, 14, 5, 6, 789000, tzinfo=UTC)

CALLERS = {
    "patient app": AccessGrant(client_id="phr-app", scope="patient/*.rs openid", patient="ada"),
    "clinician": AccessGrant(
        client_id="clinic-ehr",
        scope="user/Observation.rs user/Patient.rs",
        fhir_user="Practitioner/dr-who",
        organization="org-clinic",
        purpose_of_use="TREAT",
    ),
    "patient as user": AccessGrant(
        client_id="portal", scope="patient/*.rs", patient="ada", fhir_user="Patient/ada"
    ),
    "backend": AccessGrant(
        client_id="payer-sync",
        scope="system/*.rs",
        organization="org-payer",
        purpose_of_use="HPAYMT",
    ),
    "odd client id": AccessGrant(client_id='"quoted" \\ ünïcode app', scope="patient/*.rs"),
}


def _stored(tables: dict[str, list[Any]]) -> dict[str, list[str]]:
    """What audit_record is given, as JSON, each table's rows (and each packed kind's rows)
    in an order of their own: the two paths may list them apart."""
    doc = orjson.loads(orjson.dumps(tables, default=str))
    for row in doc.get("audit_index", []):
        row["rows"] = {kind: sorted(rows, key=repr) for kind, rows in row["rows"].items()}
    return {
        table: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode() for r in rows)
        for table, rows in doc.items()
        if rows
    }


def _general(
    grant: AccessGrant,
    interaction: str,
    touched: list[audit.Touched],
    query: str | None,
    address: str | None,
    ids: list[str],
) -> chain.Prepared:
    events = audit.interaction_events(
        grant, interaction, touched, audit.SUCCESS, query=query, address=address, recorded=AT
    )
    for event, id in zip(events, ids, strict=False):
        event["id"] = id
    return chain.prepare_events(events, at=AT)


def _assert_same(fast: chain.Prepared | None, general: chain.Prepared) -> None:
    assert fast is not None
    assert len(fast) == len(general)
    assert _stored(fast.tables) == _stored(general.tables)
    for row in fast.tables["resource"]:
        # The hash is the chain's (store/rows.content_hash of the stored content) …
        assert row["content_hash"] == "\\x" + content_hash(orjson.loads(row["content"])).hex()
    for packed, row in zip(fast.tables["audit_index"], fast.tables["resource"], strict=True):
        # … and the rows are what the generic FHIRPath indexer makes of it.
        resource = orjson.loads(row["content"])
        generic = chain.Prepared(
            audit_store.event_tables(
                [
                    prepare(
                        resource,
                        version_id=1,
                        last_updated=AT,
                        index_with=None,
                        patient_id=row["patient_id"],
                    )
                ]
            ),
            [],
        )
        assert _stored({"audit_index": [packed]}) == _stored(
            {"audit_index": generic.tables["audit_index"]}
        )
    assert fast.entries == general.entries


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize(
    ("interaction", "touched", "query"),
    [
        ("read", [audit.Touched("Observation", "o1", "3", "ada")], None),
        ("vread", [audit.Touched("Patient", "ada", "1", "ada")], None),
        (
            "search-type",
            [audit.Touched("Observation", f"o{i}", "1", "ada") for i in range(4)]
            + [audit.Touched("Practitioner", "dr-who", "2", None)],
            "Observation?patient=ada&_include=Observation:performer",
        ),
        (
            "search-type",
            [
                audit.Touched("Condition", "c1", "1", "ada"),
                audit.Touched("Condition", "c2", "1", "bo"),
            ],
            "Condition?patient=ada,bo",
        ),
        ("search-type", [], "Encounter?patient=nobody"),
        ("history-instance", [audit.Touched("MedicationRequest", "m1", "2", "bo")], None),
    ],
    ids=[
        "read",
        "vread",
        "search with an include",
        "search over two patients",
        "empty search",
        "history",
    ],
)
def test_a_template_event_is_byte_for_byte_the_general_paths_event(
    caller: str, interaction: str, touched: list[audit.Touched], query: str | None
) -> None:
    grant = CALLERS[caller]
    ids = [f"event-{n}" for n in range(4)]
    general = _general(grant, interaction, touched, query, "10.0.0.7", ids)
    fast = read_events.interaction_prepared(
        grant, interaction, touched, audit.SUCCESS, query=query, address="10.0.0.7", at=AT, ids=ids
    )
    _assert_same(fast, general)


_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    touched=st.lists(
        st.builds(
            audit.Touched,
            st.sampled_from(["Observation", "Patient", "Condition", "Organization"]),
            _ids,
            st.one_of(st.none(), st.integers(1, 99).map(str)),
            st.one_of(st.none(), st.sampled_from(["ada", "bo", "cy"])),
        ),
        max_size=6,
    ),
    address=st.one_of(st.none(), st.sampled_from(["127.0.0.1", "2001:db8::1"])),
    query=st.one_of(st.none(), st.text(max_size=30)),
    caller=st.sampled_from(sorted(CALLERS)),
)
def test_template_events_equal_the_general_path_for_any_resources_and_query(
    touched: list[audit.Touched], address: str | None, query: str | None, caller: str
) -> None:
    grant = CALLERS[caller]
    ids = [f"e{n}" for n in range(len(touched) + 2)]
    general = _general(grant, "search-type", touched, query, address, ids)
    fast = read_events.interaction_prepared(
        grant, "search-type", touched, audit.SUCCESS, query=query, address=address, at=AT, ids=ids
    )
    if fast is None:  # only an interaction with an event of no entity is left to it
        assert any("entity" not in orjson.loads(r["content"]) for r in general.tables["resource"])
        return
    _assert_same(fast, general)


def test_an_event_without_any_entity_is_left_to_the_general_path() -> None:
    backend = CALLERS["backend"]  # no patient context: nothing names a patient
    assert read_events.interaction_prepared(backend, "search-type", [], audit.SUCCESS) is None


def test_a_refusal_with_a_description_is_built_the_general_way_by_the_auditor() -> None:
    from healthmesh.api.auditing import Auditor
    from healthmesh.interactions.context import FhirRequest

    class Appender:  # enabled auditing; nothing is recorded in this test
        pass

    auditor = Auditor("healthmesh", Appender())  # type: ignore[arg-type]
    prepared = auditor.prepared(
        FhirRequest(method="GET", path=("Observation", "o1")),
        CALLERS["patient app"],
        status=403,
        address=None,
        description="scope does not allow Observation",
    )
    (content,) = [orjson.loads(r["content"]) for r in prepared.tables["resource"]]
    assert content["outcomeDesc"] == "scope does not allow Observation"
    assert content["outcome"] == audit.MINOR_FAILURE
