"""The repository: every SQL statement the FHIR interactions need, behind typed methods.

A :class:`Session` wraps one connection inside one database transaction, so an interaction
(or a whole transaction Bundle) either commits all its writes or none. Handlers above this
layer never build SQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.fhir.search.extract import IndexRows
from healthmesh.store.rows import PreparedVersion

_COLUMNS = "res_type, id, version_id, last_updated, deleted, patient_id, content_hash, content"


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One stored version as the interactions see it; ``content`` is None for a tombstone."""

    res_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str | None
    content_hash: bytes | None = None


class Served(NamedTuple):
    """What read and vread answer with: the version's number, state, Last-Modified and bytes."""

    version_id: int
    deleted: bool
    last_modified: str  # RFC 9110 IMF-fixdate
    content: str | None  # None for a tombstone


def _stored(row: Sequence[Any]) -> StoredVersion:
    return StoredVersion(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


_SELECT_CURRENT = (
    "SELECT res_type, id, version_id, last_updated, deleted, content, content_hash"
    " FROM resource WHERE res_type = %s AND id = %s"
)
# read and vread serve a version as stored: the columns the response needs, with
# Last-Modified formatted by PostgreSQL as RFC 9110 IMF-fixdate (``Mon, 23 Nov 2026 10:00:00
# GMT``; to_char's English names without the TM prefix do not depend on lc_time), which spares
# the hot path a datetime per row and its formatting. bundles.http_date is the same format.
_SERVED = (
    "SELECT version_id, deleted,"
    " to_char(last_updated AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS \"GMT\"'), content"
)
_READ = f"{_SERVED} FROM resource WHERE res_type = %s AND id = %s"
_VREAD = (
    f"{_SERVED} FROM resource WHERE res_type = %s AND id = %s AND version_id = %s"
    f" UNION ALL {_SERVED} FROM resource_history"
    " WHERE res_type = %s AND id = %s AND version_id = %s"
)
_SELECT_VERSION = (
    "SELECT res_type, id, version_id, last_updated, deleted, content, content_hash"
    " FROM resource WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
    " UNION ALL SELECT res_type, id, version_id, last_updated, deleted, content, content_hash"
    " FROM resource_history WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
)
_INSERT = f"INSERT INTO resource ({_COLUMNS}) VALUES (%s, %s, %s, %s, false, %s, %s, %s)"  # noqa: S608
# Move the current row to history and write the new one in one statement: both parts see
# the same snapshot, so the history row is exactly the version being replaced.
_REPLACE = (
    f"WITH moved AS (INSERT INTO resource_history ({_COLUMNS})"  # noqa: S608
    f" SELECT {_COLUMNS} FROM resource WHERE res_type = %(t)s AND id = %(id)s)"
    " UPDATE resource SET version_id = %(v)s, last_updated = %(at)s, deleted = %(del)s,"
    " patient_id = %(pid)s, content_hash = %(hash)s, content = %(content)s"
    " WHERE res_type = %(t)s AND id = %(id)s"
)
# Index tables: IndexRows attribute -> (table, value columns after res_type, res_id, param).
INDEX_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "token": ("search_token", ("system", "code", "display")),
    "string": ("search_string", ("norm", "exact")),
    "date": ("search_date", ("low", "high")),
    "number": ("search_number", ("value",)),
    "quantity": (
        "search_quantity",
        ("value", "system", "code", "unit", "canonical_value", "canonical_code"),
    ),
    "uri": ("search_uri", ("uri",)),
    "reference": ("search_reference", ("target_type", "target_id", "target_url")),
}


def _index_columns(columns: tuple[str, ...]) -> str:
    return ", ".join(("res_type", "res_id", "param", *columns, "patient_id", "elem"))


_INSERT_INDEX = {
    kind: f"INSERT INTO {table} ({_index_columns(cols)})"  # noqa: S608 - names from INDEX_TABLES
    f" VALUES ({', '.join(['%s'] * (len(cols) + 5))})"
    for kind, (table, cols) in INDEX_TABLES.items()
}
# Table and column names below come from INDEX_TABLES, never from input.
_COPY_INDEX = {
    kind: f"COPY {table} ({_index_columns(cols)}) FROM STDIN"
    for kind, (table, cols) in INDEX_TABLES.items()
}


def _delete_index_statement() -> str:
    """One statement that clears a resource's rows from every index table."""
    first, *rest = (table for table, _ in INDEX_TABLES.values())
    where = "WHERE res_type = %(t)s AND res_id = %(id)s"
    ctes = ", ".join(
        f"d{i} AS (DELETE FROM {table} {where})"  # noqa: S608
        for i, table in enumerate(rest)
    )
    return f"WITH {ctes} DELETE FROM {first} {where}"  # noqa: S608 - names from INDEX_TABLES


_DELETE_INDEX = _delete_index_statement()


def _index_rows_of(p: PreparedVersion, kind: str) -> list[tuple[Any, ...]]:
    rows = [(p.res_type, p.id, *row, p.patient_id, None) for row in getattr(p.index, kind)]
    rows.extend(
        (p.res_type, p.id, *row, p.patient_id, elem)
        for k, row, elem in p.index.composite
        if k == kind
    )
    return rows


def _index_rows(p: PreparedVersion) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    for kind in INDEX_TABLES:
        rows = _index_rows_of(p, kind)
        if rows:
            yield kind, rows


class Session:
    """One connection in one transaction. Created by :meth:`Repository.session`."""

    def __init__(self, conn: AsyncConnection[TupleRow]):
        self.conn = conn

    # --- reads ---------------------------------------------------------------------------
    async def current(
        self, res_type: str, id: str, *, for_update: bool = False
    ) -> StoredVersion | None:
        query = _SELECT_CURRENT + (" FOR UPDATE" if for_update else "")
        cur = await self.conn.execute(query, (res_type, id))
        row = await cur.fetchone()
        return _stored(row) if row else None

    async def version(self, res_type: str, id: str, version_id: int) -> StoredVersion | None:
        cur = await self.conn.execute(_SELECT_VERSION, {"t": res_type, "id": id, "v": version_id})
        row = await cur.fetchone()
        return _stored(row) if row else None

    async def current_many(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredVersion]:
        """Current versions of many resources in one round trip, locked for update."""
        types, ids = zip(*keys, strict=True) if keys else ((), ())
        if not types:
            return {}
        cur = await self.conn.execute(
            "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.deleted, NULL, r.content_hash"
            " FROM resource r JOIN unnest(%s::text[], %s::text[]) AS k(t, i)"
            " ON r.res_type = k.t AND r.id = k.i ORDER BY r.res_type, r.id FOR UPDATE OF r",
            (list(types), list(ids)),
        )
        return {(row[0], row[1]): _stored(row) for row in await cur.fetchall()}

    async def lock(self, key: str) -> None:
        """Serialise concurrent writers on ``key`` until this transaction ends.

        Conditional create/update take it on their criteria, so two requests with the same
        If-None-Exist cannot both see "no match" and both create.
        """
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    # --- writes --------------------------------------------------------------------------
    async def insert(self, p: PreparedVersion) -> None:
        async with self.conn.pipeline():
            await self.conn.execute(
                _INSERT,
                (
                    p.res_type,
                    p.id,
                    p.version_id,
                    p.last_updated,
                    p.patient_id,
                    p.content_hash,
                    p.content,
                ),
            )
            await self._write_index(p)

    async def replace(self, p: PreparedVersion) -> None:
        async with self.conn.pipeline():
            await self.conn.execute(
                _REPLACE,
                {
                    "t": p.res_type,
                    "id": p.id,
                    "v": p.version_id,
                    "at": p.last_updated,
                    "del": False,
                    "pid": p.patient_id,
                    "hash": p.content_hash,
                    "content": p.content,
                },
            )
            await self.conn.execute(_DELETE_INDEX, {"t": p.res_type, "id": p.id})
            await self._write_index(p)

    async def tombstone(self, res_type: str, id: str, version_id: int, at: datetime) -> None:
        """Delete: the current version moves to history, a tombstone version takes its place."""
        async with self.conn.pipeline():
            await self.conn.execute(
                _REPLACE,
                {
                    "t": res_type,
                    "id": id,
                    "v": version_id,
                    "at": at,
                    "del": True,
                    "pid": None,
                    "hash": None,
                    "content": None,
                },
            )
            await self.conn.execute(_DELETE_INDEX, {"t": res_type, "id": id})

    async def insert_many(self, versions: Sequence[PreparedVersion]) -> None:
        """Insert new resources in bulk (COPY): the loader's and transactions' fast path."""
        if not versions:
            return
        async with self.conn.cursor() as cur:
            async with cur.copy(f"COPY resource ({_COLUMNS}) FROM STDIN") as copy:
                for p in versions:
                    await copy.write_row(
                        (
                            p.res_type,
                            p.id,
                            p.version_id,
                            p.last_updated,
                            False,
                            p.patient_id,
                            p.content_hash,
                            p.content,
                        )
                    )
            for kind in INDEX_TABLES:
                rows = [row for p in versions for row in _index_rows_of(p, kind)]
                if rows:
                    async with cur.copy(_COPY_INDEX[kind]) as copy:
                        for row in rows:
                            await copy.write_row(row)

    async def replace_param_index(
        self, res_type: str, code: str, rows: Sequence[tuple[str, str | None, IndexRows]]
    ) -> None:
        """Rewrite one parameter's index rows for some resources (id, patient_id, rows): reindex."""
        ids = [id for id, _, _ in rows]
        # The parameter's own rows and its derived ones (code:of-type, code:identifier, code$n).
        like = [code, f"{code}:%", f"{code}$%"]
        async with self.conn.pipeline():
            for table, _ in INDEX_TABLES.values():
                await self.conn.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE res_type = %s AND res_id = ANY(%s) AND (param = %s OR param LIKE %s OR param LIKE %s)"
                    ).format(sql.Identifier(table)),
                    (res_type, ids, *like),
                )
            async with self.conn.cursor() as cur:
                for kind in INDEX_TABLES:
                    batch = []
                    for id, patient_id, index in rows:
                        batch += [
                            (res_type, id, *row, patient_id, None) for row in getattr(index, kind)
                        ]
                        batch += [
                            (res_type, id, *row, patient_id, elem)
                            for k, row, elem in index.composite
                            if k == kind
                        ]
                    if batch:
                        await cur.executemany(_INSERT_INDEX[kind], batch)

    async def _write_index(self, p: PreparedVersion) -> None:
        async with self.conn.cursor() as cur:
            for kind, rows in _index_rows(p):
                await cur.executemany(_INSERT_INDEX[kind], rows)

    # --- finding -------------------------------------------------------------------------
    async def find_ids(self, res_type: str, where: sql.Composable, limit: int) -> list[str]:
        """Ids of live resources of ``res_type`` matching ``where`` (a composed condition on r)."""
        query = sql.SQL(
            "SELECT r.id FROM resource r WHERE r.res_type = {t} AND NOT r.deleted AND ({w})"
            " ORDER BY r.id LIMIT {n}"
        ).format(t=sql.Literal(res_type), w=where, n=sql.Literal(limit))
        cur = await self.conn.execute(query)
        return [row[0] for row in await cur.fetchall()]

    async def analyze(self) -> None:
        """Refresh planner statistics (with the extended ones of migration 0005) after a bulk
        load: without them the first queries on fresh data pick plans thousands of times slower."""
        tables = ["resource", "resource_history", *(table for table, _ in INDEX_TABLES.values())]
        await self.conn.execute(
            sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables)))
        )

    async def fetch(self, query: sql.SQL | sql.Composed) -> list[tuple[Any, ...]]:
        cur = await self.conn.execute(query)
        rows: list[tuple[Any, ...]] = await cur.fetchall()
        return rows


class Repository:
    """The database facade: a connection pool that hands out transactional sessions."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 16,
        configure: Callable[[AsyncConnection[TupleRow]], Awaitable[None]] | None = None,
    ):
        """``configure`` runs on each new connection (tests install a statement counter)."""
        self.url = url
        self.pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # Autocommit: a lone read is one round trip; writes open explicit transactions.
            kwargs={"autocommit": True},
            configure=configure,
        )

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def session(self, *, write: bool = True) -> AsyncIterator[Session]:
        """A session whose writes commit together when the block ends, or not at all.

        ``write=False`` skips BEGIN/COMMIT: each statement then reads its own snapshot, which
        is all a single read or search needs, at a third of the round trips.
        """
        async with self.pool.connection() as conn:
            if write:
                async with conn.transaction():
                    yield Session(conn)
            else:
                yield Session(conn)

    async def read_current(self, res_type: str, id: str) -> Served | None:
        """The hot read path: one primary-key lookup of what a read serves, no transaction."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_READ, (res_type, id))
            row = await cur.fetchone()
        return None if row is None else Served(*row)

    async def read_version(self, res_type: str, id: str, version_id: int) -> Served | None:
        """vread's hot path: the version from either table (at most one has it), no transaction."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_VREAD, (res_type, id, version_id, res_type, id, version_id))
            row = await cur.fetchone()
        return None if row is None else Served(*row)
