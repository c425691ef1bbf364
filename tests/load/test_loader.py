"""healthmesh load: counts, idempotence, errors reported with file and entry, NDJSON and Bundles."""

from __future__ import annotations

import asyncio
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from healthmesh.fhir.security_labels import rules
from healthmesh.load import loader
from healthmesh.load.loader import Loader, LoadReport, find_inputs
from healthmesh.store.repository import Repository

from support import SYNTHEA, privacy_consent

SAMPLE = Path(
    str(resources.files("healthmesh.load").joinpath("sample", "synthea-sample.ndjson.gz"))
)


def run_load(url: str, paths: list[Path]) -> LoadReport:
    async def go() -> LoadReport:
        repository = Repository(url, min_size=1, max_size=3)
        await repository.open()
        try:
            return await Loader(repository).load(find_inputs(paths))
        finally:
            await repository.close()

    return asyncio.run(go())


def table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT res_type, count(*) FROM resource GROUP BY res_type").fetchall()
    return dict(rows)


def snapshot(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT res_type, id, version_id, content_hash FROM resource ORDER BY 1, 2"
        ).fetchall()


@pytest.fixture
def store(database_url: str, empty_store: None) -> str:
    return database_url


def _sample_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    with gzip.open(SAMPLE) as f:
        for line in f:
            rt = orjson.loads(line)["resourceType"]
            counts[rt] = counts.get(rt, 0) + 1
    return counts


def test_loading_the_bundled_sample_stores_every_resource(store: str) -> None:
    report = run_load(store, [SAMPLE])
    assert report.errors == []
    expected = _sample_counts()
    assert table_counts(store) == expected
    assert dict(report.created) == expected


def test_loading_twice_leaves_the_same_data(store: str) -> None:
    run_load(store, [SAMPLE])
    before = snapshot(store)
    report = run_load(store, [SAMPLE])
    assert snapshot(store) == before
    assert sum(report.unchanged.values()) == len(before)
    assert not report.created and not report.updated


def test_changed_resource_on_reload_becomes_a_new_version(store: str, tmp_path: Path) -> None:
    first = tmp_path / "a.ndjson"
    first.write_text(json.dumps({"resourceType": "Patient", "id": "p1", "gender": "male"}) + "\n")
    run_load(store, [first])
    first.write_text(json.dumps({"resourceType": "Patient", "id": "p1", "gender": "female"}) + "\n")
    report = run_load(store, [first])
    assert report.updated["Patient"] == 1
    with psycopg.connect(store) as conn:
        assert conn.execute("SELECT version_id FROM resource WHERE id = 'p1'").fetchone() == (2,)


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_loads(
    store: str, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.ndjson"
    lines = [
        json.dumps({"resourceType": "Patient", "id": "ok1"}),
        "{not json",
        json.dumps({"resourceType": "Patient", "id": "bad", "gender": 3}),
        json.dumps({"resourceType": "Patient", "id": "ok2"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    report = run_load(store, [path])
    assert table_counts(store) == {"Patient": 2}
    assert [(e.entry, e.file) for e in report.errors] == [
        ("line 2", str(path)),
        ("line 3", str(path)),
    ]
    assert "Patient.gender" in report.errors[1].reason


def test_transaction_bundle_with_a_bad_entry_is_reported_and_stores_nothing(
    store: str, tmp_path: Path
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Observation", "status": "final"},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    path = tmp_path / "bad-bundle.json"
    path.write_text(json.dumps(bundle))
    report = run_load(store, [path])
    assert table_counts(store) == {}
    assert len(report.errors) == 1
    assert report.errors[0].entry == "entry 1"


def test_collection_bundle_references_are_rewritten_to_stored_ids(
    store: str, tmp_path: Path
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": {"resourceType": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "pulse"},
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                },
            },
        ],
    }
    path = tmp_path / "collection.json"
    path.write_text(json.dumps(bundle))
    assert run_load(store, [path]).errors == []
    with psycopg.connect(store) as conn:
        (pid,) = conn.execute("SELECT id FROM resource WHERE res_type = 'Patient'").fetchone() or (
            "",
        )
        (content,) = conn.execute(
            "SELECT content FROM resource WHERE res_type = 'Observation'"
        ).fetchone() or ("",)
    assert json.loads(content)["subject"]["reference"] == f"Patient/{pid}"


def test_unreadable_and_non_bundle_files_are_reported(store: str, tmp_path: Path) -> None:
    (tmp_path / "broken.ndjson.gz").write_bytes(b"not gzip at all")
    (tmp_path / "patient.json").write_text(json.dumps({"resourceType": "Patient"}))
    report = run_load(store, [tmp_path])
    reasons = sorted(e.reason.split(":")[0] for e in report.errors)
    assert reasons == ["cannot read", "not a FHIR Bundle"]


def test_patient_compartment_key_is_stored(store: str) -> None:
    run_load(store, [SAMPLE])
    with psycopg.connect(store) as conn:
        unkeyed = conn.execute(
            "SELECT count(*) FROM resource WHERE patient_id IS NULL"
            " AND res_type IN ('Observation', 'Condition', 'Encounter', 'Patient')"
        ).fetchone()
        wrong = conn.execute(
            "SELECT count(*) FROM resource o WHERE o.res_type = 'Observation' AND NOT EXISTS"
            " (SELECT 1 FROM resource p WHERE p.res_type = 'Patient' AND p.id = o.patient_id)"
        ).fetchone()
    assert unkeyed == (0,)
    assert wrong == (0,)


@pytest.mark.shared
def test_loading_the_shared_synthea_set_gives_exactly_its_counts(store: str) -> None:
    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data/synthea is not present")
    expected: dict[str, int] = {}
    for line in (SYNTHEA.parent / "COUNTS.txt").read_text().splitlines():
        name, _, count = line.partition("\t")
        if count.isdigit() and name[:1].isupper():
            expected[name] = int(count)
    report = run_load(store, [SYNTHEA])
    assert report.errors == []
    assert table_counts(store) == expected
    assert sum(expected.values()) == 30397
    with psycopg.connect(store) as conn:
        dangling = conn.execute(
            'SELECT count(*) FROM resource WHERE content LIKE \'%"reference":"urn:uuid:%\''
        ).fetchone()
    assert dangling == (0,)


def test_a_load_leaves_fresh_planner_statistics(store: str) -> None:
    run_load(store, [SAMPLE])
    with psycopg.connect(store) as conn:
        analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('resource', 'search_token', 'search_reference')"
            " AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL"
        ).fetchone()
        extended = conn.execute(
            "SELECT count(*) FROM pg_statistic_ext WHERE stxname LIKE 'search_%_stats'"
        ).fetchone()
    assert analyzed == (3,)
    assert extended == (7,)


def test_unenforceable_consent_is_reported_and_its_bundle_stores_nothing(
    store: str, tmp_path: Path
) -> None:
    # An active patient-privacy Consent without a provision cannot be enforced as meant
    # (fhir/consent.py): refused like a transaction with a bad entry, not a crash.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:3b0b4c0e-1d2f-4a5b-8c6d-7e8f9a0b1c2d",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": privacy_consent("urn:uuid:3b0b4c0e-1d2f-4a5b-8c6d-7e8f9a0b1c2d"),
                "request": {"method": "POST", "url": "Consent"},
            },
        ],
    }
    path = tmp_path / "consent.json"
    path.write_text(json.dumps(bundle))
    report = run_load(store, [path])
    assert table_counts(store) == {}
    assert [(e.file, e.entry) for e in report.errors] == [(str(path), "entry 1")]
    assert "Consent.provision" in report.errors[0].reason


def test_a_line_with_a_nul_character_is_reported_and_the_rest_loads(
    store: str, tmp_path: Path
) -> None:
    path = tmp_path / "nul.ndjson"
    lines = [
        json.dumps({"resourceType": "Patient", "id": "nul1", "name": [{"family": "a\u0000b"}]}),
        json.dumps({"resourceType": "Patient", "id": "fine"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    report = run_load(store, [path])
    assert table_counts(store) == {"Patient": 1}
    assert [(e.entry, "NUL" in e.reason) for e in report.errors] == [("line 1", True)]


def _label_digest(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT digest FROM label_rules_state").fetchone()
    return None if row is None else str(row[0])


def test_a_load_into_a_fresh_store_records_the_label_rules_it_applied(store: str) -> None:
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("DELETE FROM label_rules_state")
    run_load(store, [SAMPLE])
    # The next `serve` finds the digest current and does not relabel the whole store.
    assert _label_digest(store) == rules().digest


def test_a_load_into_a_store_labelled_by_unknown_rules_leaves_the_relabel_to_serve(
    store: str, tmp_path: Path
) -> None:
    run_load(store, [SAMPLE])
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("DELETE FROM label_rules_state")  # as written by an older version
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps({"resourceType": "Patient", "id": "later"}) + "\n")
    run_load(store, [path])
    assert _label_digest(store) is None


def test_the_later_line_wins_when_a_resource_repeats_across_chunks(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks are written over two connections at once. The first chunk here takes a worker
    # far longer to prepare than the next, yet the next, repeating one of its resources,
    # must be written after it (load/ordering.py), so the later line still wins.
    monkeypatch.setattr(loader, "CHUNK", 2)
    slow: dict[str, Any] = {"resourceType": "Patient", "id": "slow"}
    slow["name"] = [{"family": f"F{n}", "given": [f"G{n}"]} for n in range(20000)]
    lines = [json.dumps(slow)]
    for n in range(6):
        if n:
            lines.append(json.dumps({"resourceType": "Patient", "id": f"other-{n}"}))
        lines.append(
            json.dumps({"resourceType": "Patient", "id": "same", "birthDate": f"{2000 + n}"})
        )
    path = tmp_path / "repeats.ndjson"
    path.write_text("\n".join(lines) + "\n")
    report = run_load(store, [path])
    assert report.errors == []
    with psycopg.connect(store) as conn:
        row = conn.execute("SELECT content FROM resource WHERE id = 'same'").fetchone()
        versions = conn.execute(
            "SELECT count(*) FROM resource_history WHERE id = 'same'"
        ).fetchone()
    assert row is not None and orjson.loads(row[0])["birthDate"] == "2005"
    assert versions == (5,)
