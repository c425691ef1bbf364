"""Tamper evidence: each kind of change made with raw SQL is found by verify, which names the
first bad entry — through the library and through ``healthmesh audit verify``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from audit_support import fresh_database, patient_grant, read_event, run, tamper
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from typer.testing import CliRunner

from healthmesh.cli import app
from healthmesh.privacy import chain
from healthmesh.privacy.audit import Touched, interaction_event

ENTRIES = 8
EVERY = 5  # a signed checkpoint at entry 5


@pytest.fixture
def trail(admin_url: str) -> Iterator[str]:
    """A database with a clean chain of 8 entries and a checkpoint at 5."""
    with fresh_database(admin_url) as url:

        async def body(conn: AsyncConnection[TupleRow]) -> None:
            for n in range(ENTRIES):
                await chain.record(conn, read_event(f"p{n}"), checkpoint_every=EVERY)

        run(url, body)
        assert run(url, chain.verify).ok
        yield url


def _one(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        assert row is not None
        return row[0]


def _event_id(url: str, seq: int) -> str:
    return str(_one(url, "SELECT event_id FROM audit_chain WHERE seq = %s", (seq,)))


def _first_bad(url: str) -> chain.Problem:
    report = run(url, chain.verify)
    assert not report.ok
    first = report.first_bad
    assert first is not None
    return first


def test_an_edited_event_is_named(trail: str) -> None:
    event_id = _event_id(trail, 3)
    tamper(
        trail,
        'UPDATE resource SET content = replace(content, \'"outcome":"0"\', \'"outcome":"4"\')'
        " WHERE res_type = 'AuditEvent' AND id = %s",
        (event_id,),
    )
    first = _first_bad(trail)
    assert (first.seq, first.event_id) == (3, event_id)
    assert "changed" in first.what


def test_an_edited_entry_is_named(trail: str) -> None:
    tamper(trail, "UPDATE audit_chain SET client_id = 'someone-else' WHERE seq = 4")
    first = _first_bad(trail)
    assert first.seq == 4 and "fact columns" in first.what


def test_an_event_moved_to_another_patients_compartment_is_named(trail: str) -> None:
    tamper(
        trail,
        "UPDATE resource SET patient_id = 'mallory' WHERE res_type = 'AuditEvent' AND id = %s",
        (_event_id(trail, 2),),
    )
    assert _first_bad(trail).seq == 2


def test_a_deleted_entry_is_named(trail: str) -> None:
    event_id = _event_id(trail, 3)
    tamper(trail, "DELETE FROM audit_chain WHERE seq = 3")
    tamper(trail, "DELETE FROM resource WHERE res_type = 'AuditEvent' AND id = %s", (event_id,))
    first = _first_bad(trail)
    assert first.seq == 3 and "missing" in first.what


def test_a_deleted_event_is_named(trail: str) -> None:
    event_id = _event_id(trail, 6)
    tamper(trail, "DELETE FROM resource WHERE res_type = 'AuditEvent' AND id = %s", (event_id,))
    first = _first_bad(trail)
    assert (first.seq, first.event_id) == (6, event_id)


def test_deleting_the_oldest_entries_without_a_purge_is_named(trail: str) -> None:
    tamper(trail, "DELETE FROM audit_chain WHERE seq <= 2")
    first = _first_bad(trail)
    assert first.seq == 1 and "no purge checkpoint" in first.what


def test_a_truncated_tail_below_a_checkpoint_is_named(trail: str) -> None:
    tamper(trail, "DELETE FROM audit_chain WHERE seq >= 4")
    tamper(
        trail, "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_chain WHERE seq = 3)"
    )
    first = _first_bad(trail)
    assert first.seq == 4 and "signed at 5" in first.what


def test_reordered_entries_are_named(trail: str) -> None:
    tamper(trail, "UPDATE audit_chain SET seq = 100 WHERE seq = 2")
    tamper(trail, "UPDATE audit_chain SET seq = 2 WHERE seq = 3")
    tamper(trail, "UPDATE audit_chain SET seq = 3 WHERE seq = 100")
    first = _first_bad(trail)
    assert first.seq == 2 and "predecessor" in first.what


def _forge(url: str, seq: int, prev: bytes) -> str:
    """A well-formed event and entry, hashed correctly, as an attacker who read the code would."""
    event = interaction_event(
        patient_grant("p9"), "read", [Touched("Observation", "fake", "1", "p9")], "0"
    )
    event["meta"] = {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00.000Z"}
    from healthmesh.store.rows import content_hash

    digest = content_hash(event)
    tamper(
        url,
        "INSERT INTO resource (res_type, id, version_id, last_updated, deleted, patient_id,"
        " content_hash, content) VALUES ('AuditEvent', %s, 1, now(), false, 'p9', %s, %s)",
        (event["id"], digest, orjson.dumps(event).decode()),
    )
    facts = chain.facts_of(event)
    tamper(
        url,
        "INSERT INTO audit_chain (seq, event_id, recorded, event_hash, prev_hash, hash, kind,"
        " client_id, address, patient_id, action, outcome, system_access, object, types)"
        " VALUES (%s, %s, now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            seq,
            event["id"],
            digest,
            prev,
            chain.link_hash(seq, prev, digest),
            facts.kind,
            facts.client_id,
            facts.address,
            facts.patient_id,
            facts.action,
            facts.outcome,
            facts.system_access,
            facts.object,
            list(facts.types),
        ),
    )
    return str(event["id"])


def test_an_entry_inserted_in_the_middle_is_found_where_the_chain_breaks(trail: str) -> None:
    tamper(trail, "UPDATE audit_chain SET seq = seq + 1000 WHERE seq > 3")
    tamper(trail, "UPDATE audit_chain SET seq = seq - 999 WHERE seq > 1000")
    prev = bytes(_one(trail, "SELECT hash FROM audit_chain WHERE seq = 3"))
    _forge(trail, 4, prev)
    first = _first_bad(trail)
    # The forgery itself is consistent; the entry after it no longer follows.
    assert first.seq == 5 and "predecessor" in first.what


def test_an_auditevent_stored_outside_the_chain_is_named(trail: str) -> None:
    forged = _forge(trail, 999, bytes(32))
    tamper(trail, "DELETE FROM audit_chain WHERE seq = 999")
    report = run(trail, chain.verify)
    assert [(p.seq, p.event_id) for p in report.problems] == [(None, forged)]


def test_a_consistently_rewritten_chain_is_caught_by_the_signed_checkpoint(trail: str) -> None:
    """An attacker edits entry 2 and recomputes every later hash: the chain is consistent
    again, but entry 5 no longer matches what the node signed."""
    event_id = _event_id(trail, 2)
    tamper(
        trail,
        "UPDATE resource SET content = replace(content, 'patient-app', 'other-app')"
        " WHERE res_type = 'AuditEvent' AND id = %s",
        (event_id,),
    )
    with psycopg.connect(trail) as conn:
        conn.execute("SET session_replication_role = replica")
        rows = conn.execute(
            "SELECT c.seq, r.content FROM audit_chain c JOIN resource r"
            " ON r.res_type = 'AuditEvent' AND r.id = c.event_id ORDER BY c.seq"
        ).fetchall()
        prev = bytes(32)
        from healthmesh.store.rows import content_hash

        for seq, content in rows:
            event = orjson.loads(content)
            digest = content_hash(event)
            facts = chain.facts_of(event)
            hash = chain.link_hash(seq, prev, digest)
            conn.execute(
                "UPDATE audit_chain SET event_hash = %s, prev_hash = %s, hash = %s, client_id = %s"
                " WHERE seq = %s",
                (digest, prev, hash, facts.client_id, seq),
            )
            prev = hash
        conn.execute("UPDATE audit_head SET hash = %s", (prev,))
    first = _first_bad(trail)
    assert first.seq == 5 and "signed periodic checkpoint" in first.what


def test_a_forged_checkpoint_is_named(trail: str) -> None:
    tamper(trail, "UPDATE audit_checkpoint SET jws = jws || 'x'")
    first = _first_bad(trail)
    assert first.seq == 5 and "checkpoint" in first.what


def test_the_verify_command_names_the_first_bad_entry_and_fails(trail: str) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["audit", "verify", "--database-url", trail])
    assert clean.exit_code == 0, clean.output
    assert "8 entries" in clean.output and "intact" in clean.output
    tamper(trail, "UPDATE audit_chain SET outcome = '8' WHERE seq = 6")
    broken = runner.invoke(app, ["audit", "verify", "--database-url", trail])
    assert broken.exit_code == 1
    assert "first bad: entry 6" in broken.output


def test_a_checkpoint_on_demand_catches_a_later_truncated_tail(trail: str) -> None:
    runner = CliRunner()
    signed = runner.invoke(app, ["audit", "checkpoint", "--database-url", trail])
    assert signed.exit_code == 0, signed.output
    assert "signed the head at entry 8" in signed.output
    tamper(trail, "DELETE FROM audit_chain WHERE seq >= 7")
    tamper(
        trail, "UPDATE audit_head SET seq = 6, hash = (SELECT hash FROM audit_chain WHERE seq = 6)"
    )
    first = _first_bad(trail)
    assert first.seq == 7 and "signed at 8" in first.what


def test_printed_keys_let_anyone_check_a_checkpoint_outside_the_node(trail: str) -> None:
    from joserfc import jws
    from joserfc.jwk import OKPKey

    result = CliRunner().invoke(app, ["audit", "verify", "--print-keys", "--database-url", trail])
    assert result.exit_code == 0, result.output
    [jwk] = json.loads(result.stdout)["keys"]
    assert "d" not in jwk  # public only
    token = str(_one(trail, "SELECT jws FROM audit_checkpoint WHERE seq = 5"))
    claims = json.loads(
        jws.deserialize_compact(token, OKPKey.import_key(jwk), algorithms=["Ed25519"]).payload
    )
    hash = bytes(_one(trail, "SELECT hash FROM audit_chain WHERE seq = 5"))
    assert (claims["seq"], claims["hash"], claims["kind"]) == (5, hash.hex(), "periodic")
