"""$summary and the shared bundle read a record in a fixed number of SQL statements, however
large it is: not one per resource, section or reference."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ips_records import Ids, ada_record, put_all
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow

from healthmesh.share.bundle import shared_bundle
from healthmesh.share.ips import patient_summary
from healthmesh.store.repository import Repository

from conftest import ServerThread


class _Counter:
    statements = 0


class _CountingCursor(AsyncCursor[TupleRow]):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        _Counter.statements += 1
        return await super().execute(*args, **kwargs)


async def _count_cursors(conn: AsyncConnection[TupleRow]) -> None:
    conn.cursor_factory = _CountingCursor


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=60) as c:
        yield c


def _statements(database_url: str, patient: str, *, shared: bool) -> tuple[int, int]:
    """(statements, entries) of one summary or shared bundle of ``patient``."""

    async def go() -> tuple[int, int]:
        repository = Repository(database_url, min_size=1, max_size=1, configure=_count_cursors)
        await repository.open()
        try:
            async with repository.session(write=False) as session:
                _Counter.statements = 0
                if shared:
                    bundle = await shared_bundle(session, patient, base="http://x/fhir")
                else:
                    bundle = (await patient_summary(session, patient, base="http://x/fhir")).bundle
                return _Counter.statements, len(bundle["entry"])
        finally:
            await repository.close()

    return asyncio.run(go())


def _more_of_everything(ids: Ids, n: int) -> list[dict[str, Any]]:
    """``n`` more labs, immunizations and active problems for Ada, each distinct."""
    ada = f"Patient/{ids('ada')}"
    made: list[dict[str, Any]] = []
    for i in range(n):
        code = {"coding": [{"system": "urn:test:codes", "code": f"c{i}"}], "text": f"thing {i}"}
        made += [
            {
                "resourceType": "Observation",
                "id": ids(f"lab{i}"),
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": code,
                "subject": {"reference": ada},
                "valueString": "ok",
            },
            {
                "resourceType": "Condition",
                "id": ids(f"problem{i}"),
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": code,
                "subject": {"reference": ada},
            },
            {
                "resourceType": "Immunization",
                "id": ids(f"shot{i}"),
                "status": "completed",
                "vaccineCode": code,
                "patient": {"reference": ada},
                "occurrenceDateTime": "2020-01-01",
            },
        ]
    return made


@pytest.mark.parametrize("shared", [False, True], ids=["summary", "shared-bundle"])
def test_a_bigger_record_takes_no_more_statements(
    http: httpx.Client, database_url: str, shared: bool
) -> None:
    small, big = Ids(), Ids()
    put_all(http, ada_record(small))
    put_all(http, ada_record(big) + _more_of_everything(big, 40))
    few, small_entries = _statements(database_url, small("ada"), shared=shared)
    many, big_entries = _statements(database_url, big("ada"), shared=shared)
    assert big_entries >= small_entries + 120  # the extra resources are in the document
    assert many == few
    assert few == 2, few  # the Patient, then the record in one statement
