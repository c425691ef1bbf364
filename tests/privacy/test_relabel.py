"""Stored data is re-labelled when the security-label rule table changes."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import psycopg

from healthmesh.fhir.security_labels import rules
from healthmesh.interactions.relabel import needs_relabel, relabel
from healthmesh.store.repository import Repository


def _run_relabel(database_url: str) -> tuple[bool, int, bool]:
    async def body() -> tuple[bool, int, bool]:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            before = await needs_relabel(repository)
            changed = await relabel(repository)
            return before, changed, await needs_relabel(repository)
        finally:
            await repository.close()

    return asyncio.run(body())


def test_data_stored_before_a_rule_existed_is_labelled_as_a_new_version(database_url: str) -> None:
    id = f"old-{uuid.uuid4().hex[:10]}"
    condition = {
        "resourceType": "Condition",
        "id": id,
        "meta": {"versionId": "1", "lastUpdated": "2020-01-01T00:00:00.000Z"},
        "subject": {"reference": "Patient/p-old"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "7200002"}]},
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        # As an older release, without the rule, would have stored it: unlabelled.
        conn.execute(
            "INSERT INTO resource (res_type, id, version_id, last_updated, deleted, patient_id,"
            " content_hash, content) VALUES ('Condition', %s, 1, now(), false, 'p-old', %s, %s)",
            (id, b"\x00" * 32, orjson.dumps(condition).decode()),
        )
        conn.execute("UPDATE label_rules_state SET digest = 'older-rules'")
        conn.execute(
            "INSERT INTO label_rules_state (digest) VALUES ('older-rules') ON CONFLICT DO NOTHING"
        )
    before, changed, after = _run_relabel(database_url)
    assert before is True and after is False and changed >= 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT version_id, content FROM resource WHERE res_type = 'Condition' AND id = %s",
            (id,),
        ).fetchone()
        indexed = conn.execute(
            "SELECT code FROM search_token WHERE res_type = 'Condition' AND res_id = %s"
            " AND param = '_security'",
            (id,),
        ).fetchall()
        digest = conn.execute("SELECT digest FROM label_rules_state").fetchone()
    assert row is not None and row[0] == 2
    labels = {s["code"] for s in orjson.loads(row[1])["meta"]["security"]}
    assert {"ETH", "R"} <= labels
    assert {"ETH", "R"} <= {code for (code,) in indexed}
    assert digest == (rules().digest,)


def test_relabelling_again_changes_nothing(database_url: str) -> None:
    _run_relabel(database_url)
    before, changed, after = _run_relabel(database_url)
    assert (before, changed, after) == (False, 0, False)
