"""COPY lines made in Python (store/copy_rows.py) read back in PostgreSQL as the values indexed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import psycopg

from healthmesh.store.copy_rows import INDEX_KINDS, EncodedBatch, content_of, encode
from healthmesh.store.repository import INDEX_TABLES, Repository
from healthmesh.store.rows import PreparedVersion, now, prepare

from support import unique

AWKWARD = "tab\there, new\nline, cr\rhere, back\\slash \\N, ümlaut 漢字 \U0001f600"


def _insert(url: str, versions: list[PreparedVersion]) -> None:
    async def go() -> None:
        repository = Repository(url, min_size=1, max_size=1)
        await repository.open()
        try:
            async with repository.session() as session:
                await session.insert_encoded(EncodedBatch.of([encode(p) for p in versions]))
        finally:
            await repository.close()

    asyncio.run(go())


def _expected(p: PreparedVersion, kind: str) -> list[tuple[Any, ...]]:
    rows = [(*row, p.patient_id, None) for row in getattr(p.index, kind)]
    rows += [(*row, p.patient_id, elem) for k, row, elem in p.index.composite if k == kind]
    return sorted(rows, key=repr)


def _stored(url: str, p: PreparedVersion, kind: str) -> list[tuple[Any, ...]]:
    table, columns = INDEX_TABLES[kind]
    query = psycopg.sql.SQL("SELECT {} FROM {} WHERE res_type = %s AND res_id = %s").format(
        psycopg.sql.SQL(", ").join(
            map(psycopg.sql.Identifier, ("param", *columns, "patient_id", "elem"))
        ),
        psycopg.sql.Identifier(table),
    )
    with psycopg.connect(url) as conn:
        return sorted(conn.execute(query, (p.res_type, p.id)).fetchall(), key=repr)


def test_index_kinds_are_the_repositorys_tables() -> None:
    assert set(INDEX_KINDS) == set(INDEX_TABLES)


def test_copied_rows_read_back_as_the_values_indexed(database_url: str) -> None:
    at = now()
    patient_id = unique("p")
    patient = prepare(
        {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": "urn:x\\y", "value": AWKWARD}],
            "name": [{"family": AWKWARD, "given": ["Ｆｕｌｌ＼ｗｉｄｔｈ"]}],
            "birthDate": "0001",
            "address": [{"text": "line one\nline two", "city": "Zürich"}],
        },
        version_id=1,
        last_updated=at,
    )
    observation = prepare(
        {
            "resourceType": "Observation",
            "id": unique("o"),
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8", "display": AWKWARD}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectivePeriod": {"start": "2020-02-29T23:59:59.5+14:00"},
            # 1e-7 mg: a Decimal that prints with an exponent, and its canonical value.
            "valueQuantity": {
                "value": 0.0000001,
                "unit": "mg",
                "system": "http://unitsofmeasure.org",
                "code": "mg",
            },
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org"},
                }
            ],
        },
        version_id=1,
        last_updated=at,
    )
    _insert(database_url, [patient, observation])
    checked = set()
    for p in (patient, observation):
        for kind in INDEX_KINDS:
            expected = _expected(p, kind)
            assert _stored(database_url, p, kind) == expected, kind
            if expected:
                checked.add(kind)
    assert {"token", "string", "date", "quantity", "reference"} <= checked
    quantities = _stored(database_url, observation, "quantity")
    assert Decimal("1E-7") in {row[1] for row in quantities}
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT version_id, last_updated, deleted, patient_id, content_hash, content"
            " FROM resource WHERE res_type = 'Patient' AND id = %s",
            (patient_id,),
        ).fetchone()
    assert row == (1, at, False, patient_id, patient.content_hash, patient.content)
    assert "\\\\" in patient.content  # the JSON's own escapes survived the COPY unchanged


def test_the_json_is_recovered_from_its_copy_line() -> None:
    p = prepare(
        {"resourceType": "Patient", "id": "j", "name": [{"family": AWKWARD}]},
        version_id=1,
        last_updated=now(),
    )
    assert content_of(encode(p)) == p.content.encode()


def test_a_batch_picks_its_versions_lines_and_json() -> None:
    at = now()
    versions = [
        prepare(
            {"resourceType": "Patient", "id": f"b{n}", "name": [{"family": f"{AWKWARD}{n}"}]},
            version_id=1,
            last_updated=at,
        )
        for n in range(3)
    ]
    encoded = [encode(p) for p in versions]
    batch = EncodedBatch.of(encoded)
    assert [batch.content(n) for n in range(3)] == [p.content.encode() for p in versions]
    picked = batch.pick([0, 2])
    alone = EncodedBatch.of([encoded[0], encoded[2]])
    assert (picked.keys, picked.resource, picked.indexes) == (
        alone.keys,
        alone.resource,
        alone.indexes,
    )
