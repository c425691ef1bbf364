"""Hot paths run a bounded number of SQL statements, whatever the size of their input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import pytest
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow

from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.dispatch import dispatch
from healthmesh.interactions.transaction import transaction
from healthmesh.store.repository import Repository

from support import observation, patient, unique

T = TypeVar("T")


class Counter:
    statements = 0


class CountingCursor(AsyncCursor[TupleRow]):
    """Counts every statement sent: execute, each executemany, each COPY."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        Counter.statements += 1
        return await super().execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> None:
        Counter.statements += 1
        await super().executemany(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        Counter.statements += 1
        return super().copy(*args, **kwargs)


async def _count_cursors(conn: AsyncConnection[TupleRow]) -> None:
    conn.cursor_factory = CountingCursor


def run(database_url: str, work: Callable[[Repository], Awaitable[T]]) -> tuple[T, int]:
    async def go() -> tuple[T, int]:
        repository = Repository(database_url, min_size=1, max_size=2, configure=_count_cursors)
        await repository.open()
        try:
            Counter.statements = 0
            result = await work(repository)
            return result, Counter.statements
        finally:
            await repository.close()

    return asyncio.run(go())


def _request(
    method: str, path: str, params: list[tuple[str, str]] | None = None, body: Any = None
) -> FhirRequest:
    return FhirRequest(
        method=method,
        path=tuple(path.split("/")) if path else (),
        params=params or [],
        body=body,
        base="http://test/fhir",
    )


def _bundle(n: int) -> dict[str, Any]:
    pid = "urn:uuid:7f1d2c3b-0000-4000-8000-000000000001"
    entries = [
        {"fullUrl": pid, "resource": patient(), "request": {"method": "POST", "url": "Patient"}}
    ]
    entries += [
        {"resource": observation(pid), "request": {"method": "POST", "url": "Observation"}}
        for _ in range(n)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _get(repository: Repository, path: str, params: list[tuple[str, str]]) -> Awaitable[FhirResult]:
    async def go() -> FhirResult:
        async with repository.session(write=False) as session:
            return await dispatch(session, _request("GET", path, params))

    return go()


def test_a_transaction_runs_the_same_statements_for_10_or_100_entries(database_url: str) -> None:
    _, small = run(
        database_url, lambda repo: transaction(repo, _request("POST", "", body=_bundle(10)))
    )
    _, large = run(
        database_url, lambda repo: transaction(repo, _request("POST", "", body=_bundle(100)))
    )
    assert small == large
    assert large <= 12  # BEGIN, COPY per table written, COMMIT


def test_read_is_one_statement(database_url: str) -> None:
    created, _ = run(
        database_url, lambda repo: transaction(repo, _request("POST", "", body=_bundle(1)))
    )
    assert created.body is not None
    location = created.body["entry"][0]["response"]["location"].split("/_history")[0]
    result, statements = run(database_url, lambda repo: _get(repo, location, []))
    assert result.status == 200
    assert statements == 1


@pytest.mark.parametrize(
    ("params", "bound"),
    [
        (
            [
                ("code", "http://loinc.org|8867-4"),
                ("date", "ge2000"),
                ("subject:Patient.name", "Test"),
            ],
            1,
        ),
        (
            [
                ("code", "8867-4"),
                ("_include", "Observation:subject"),
                ("_revinclude", "Provenance:target"),
            ],
            3,
        ),
        ([("code", "8867-4"), ("_total", "accurate"), ("_sort", "-date")], 2),
        ([("_has:Observation:subject:code", "8867-4"), ("_summary", "count")], 1),
    ],
)
def test_a_search_runs_a_bounded_number_of_statements(
    database_url: str, params: list[tuple[str, str]], bound: int
) -> None:
    run(database_url, lambda repo: transaction(repo, _request("POST", "", body=_bundle(25))))
    path = "Patient" if params[0][0].startswith("_has") else "Observation"
    result, statements = run(database_url, lambda repo: _get(repo, path, params))
    assert result.status == 200
    assert statements <= bound


class RecordingCursor(AsyncCursor[TupleRow]):
    """Keeps the text of every statement sent."""

    sent: ClassVar[list[str]] = []

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query.as_string(self.connection) if hasattr(query, "as_string") else str(query)
        RecordingCursor.sent.append(text)
        return await super().execute(query, *args, **kwargs)


async def _record(conn: AsyncConnection[TupleRow]) -> None:
    conn.cursor_factory = RecordingCursor


def test_a_secured_update_or_delete_asks_whether_it_may_touch_the_row_once(
    database_url: str,
) -> None:
    from healthmesh.auth.grant import AccessGrant
    from healthmesh.auth.policy import visibility_for
    from healthmesh.interactions import write

    owner = f"qc-{unique()}"
    grant = AccessGrant(client_id="qc-app", scope="patient/*.cruds", patient=owner)
    visibility = visibility_for(grant)
    mine = {**observation(f"Patient/{owner}"), "id": unique("qc-obs")}

    async def go() -> list[str]:
        repository = Repository(database_url, min_size=1, max_size=2, configure=_record)
        await repository.open()
        try:
            async with repository.session() as session:
                await write.update(session, dict(mine), "Observation", mine["id"])
            RecordingCursor.sent = []
            async with repository.session(visibility=visibility) as session:
                changed = {**mine, "status": "amended"}
                await write.update(session, changed, "Observation", mine["id"])
            async with repository.session(visibility=visibility) as session:
                assert await write.delete(session, "Observation", mine["id"]) is not None
            return RecordingCursor.sent
        finally:
            await repository.close()

    sent = asyncio.run(go())
    # The row checks (store/repository.py _refused): the update's of the row it replaces and
    # of the version it wrote (before commit), the delete's of its row. Before, the replaced
    # and the deleted rows were each asked twice (write.py's check, then the store's).
    checks = [q for q in sent if q.startswith("SELECT r.id FROM resource r WHERE r.res_type")]
    assert len(checks) == 3, checks
