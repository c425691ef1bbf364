"""The repository: every SQL statement the FHIR interactions need, behind typed methods.

A :class:`Session` wraps one connection inside one database transaction, so an interaction
(or a whole transaction Bundle) either commits all its writes or none. Handlers above this
layer never build SQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, NamedTuple

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.fhir.consent import DATA_CATEGORIES, ConsentRule
from healthmesh.fhir.errors import Forbidden
from healthmesh.fhir.search.extract import IndexRows
from healthmesh.store import consent_sql
from healthmesh.store.access import Visibility
from healthmesh.store.copy_rows import (
    INDEX_COLUMNS,
    INDEX_KINDS,
    RESOURCE_COLUMNS,
    EncodedBatch,
    encode,
)
from healthmesh.store.rows import PreparedVersion
from healthmesh.store.search.compiler import Compiler
from healthmesh.store.statements import bind

PERMISSION_ORDER = "cud"
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def refusal(permission: str, res_type: str, id: str) -> str:
    return (
        f"This token does not permit {_VERBS.get(permission, permission)} of {res_type}/{id}"
        " (its scopes or patient context do not cover it)"
    )


_COLUMNS = ", ".join(RESOURCE_COLUMNS)


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
    # The row's compartment key (patient_id), when the query read it: the audit names the
    # owner from it instead of parsing the content again (api/auditing.py touched_by).
    owner: str | None = None
    owner_read: bool = False


class Served(NamedTuple):
    """What read and vread answer with: the version's number, state, Last-Modified and bytes."""

    version_id: int
    deleted: bool
    last_modified: str  # RFC 9110 IMF-fixdate
    content: str | None  # None for a tombstone


def _stored(row: Sequence[Any]) -> StoredVersion:
    """A row of ``_VERSION_COLUMNS`` (patient_id last, when selected)."""
    if len(row) > 7:
        return StoredVersion(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], owner=row[7], owner_read=True
        )
    return StoredVersion(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


_VERSION_COLUMNS = (
    "res_type, id, version_id, last_updated, deleted, content, content_hash, patient_id"
)
_SELECT_CURRENT = f"SELECT {_VERSION_COLUMNS} FROM resource WHERE res_type = %s AND id = %s"  # noqa: S608
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
    f"SELECT {_VERSION_COLUMNS}"  # noqa: S608 - column names, no input
    " FROM resource WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
    f" UNION ALL SELECT {_VERSION_COLUMNS}"
    " FROM resource_history WHERE res_type = %(t)s AND id = %(id)s AND version_id = %(v)s"
)
_INSERT = f"INSERT INTO resource ({_COLUMNS}) VALUES (%s, %s, %s, %s, false, %s, %s, %s)"  # noqa: S608
# Move the current row to history and write the new one in one statement: both parts see
# the same snapshot, so the history row is exactly the version being replaced. A tombstone
# keeps its owner (docs/storage.md), so a patient's deleted records stay theirs: 410, history.
_REPLACE = (
    f"WITH moved AS (INSERT INTO resource_history ({_COLUMNS})"  # noqa: S608
    f" SELECT {_COLUMNS} FROM resource WHERE res_type = %(t)s AND id = %(id)s)"
    " UPDATE resource SET version_id = %(v)s, last_updated = %(at)s, deleted = %(del)s,"
    " patient_id = CASE WHEN %(del)s THEN patient_id ELSE %(pid)s END,"
    " content_hash = %(hash)s, content = %(content)s"
    " WHERE res_type = %(t)s AND id = %(id)s"
)
# Identity matching (auth/identity): Patients by birthDate, and all Patients page by page.
_PATIENTS_BORN_BETWEEN = (
    "SELECT r.id, r.content FROM resource r"
    " JOIN (SELECT DISTINCT res_id FROM search_date WHERE res_type = 'Patient'"
    " AND param = 'birthdate' AND low >= %s AND low < %s) d ON d.res_id = r.id"
    " WHERE r.res_type = 'Patient' AND NOT r.deleted ORDER BY r.id LIMIT %s"
)
_PATIENTS_AFTER = (
    "SELECT id, content FROM resource WHERE res_type = 'Patient' AND NOT deleted AND id > %s"
    " ORDER BY id LIMIT %s"
)
# Index tables: IndexRows attribute -> (table, value columns after res_type, res_id, param).
INDEX_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    kind: (f"search_{kind}", columns) for kind, columns in INDEX_COLUMNS.items()
}


# What a bulk load refreshes statistics of (Session.analyze).
ANALYZED_TABLES = (
    "resource",
    "resource_history",
    *(table for table, _ in INDEX_TABLES.values()),
)


def _index_columns(columns: tuple[str, ...]) -> str:
    return ", ".join(("res_type", "res_id", "param", *columns, "patient_id", "elem"))


# Each index table's columns, in order (json_rows; the audit trail's templates).
INDEX_NAMES = {
    kind: ("res_type", "res_id", "param", *cols, "patient_id", "elem")
    for kind, (_, cols) in INDEX_TABLES.items()
}
_INSERT_INDEX = {
    kind: f"INSERT INTO {table} ({_index_columns(cols)})"  # noqa: S608 - names from INDEX_TABLES
    f" VALUES ({', '.join(['%s'] * (len(cols) + 5))})"
    for kind, (table, cols) in INDEX_TABLES.items()
}
# Table and column names below come from INDEX_TABLES, never from input.
_COPY_RESOURCE = f"COPY resource ({', '.join(RESOURCE_COLUMNS)}) FROM STDIN"
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


_DELETE_CONSENT = "DELETE FROM consent_rule WHERE consent_id = %s"
_INSERT_CONSENT = (
    "INSERT INTO consent_rule (consent_id, n, patient_id, effect, depth, actors, purposes, types,"
    " cat_types, cat_codes, labels, period_start, period_end)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _array(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def _consent_rows(
    id: str, patient_id: str | None, consent: tuple[ConsentRule, ...]
) -> list[tuple[Any, ...]]:
    """``consent_rule`` rows of a Consent version (none unless active patient-privacy)."""
    if not consent or patient_id is None:
        return []
    rows = []
    for n, rule in enumerate(consent):
        cat_types: list[str] | None = None
        cat_codes: list[str] | None = None
        if rule.categories is not None:
            covered = [DATA_CATEGORIES[c] for c in sorted(rule.categories)]
            cat_types = sorted({t for c in covered for t in c.types})
            cat_codes = sorted({f"{t}|{code}" for c in covered for t, code in c.by_category})
        rows.append(
            (
                id,
                n,
                patient_id,
                rule.effect,
                rule.depth,
                _array(rule.actors),
                _array(rule.purposes),
                _array(rule.types),
                cat_types,
                cat_codes,
                _array(rule.labels),
                rule.start,
                rule.end,
            )
        )
    return rows


def _index_rows_of(p: PreparedVersion, kind: str) -> list[tuple[Any, ...]]:
    rows = [(p.res_type, p.id, *row, p.patient_id, None) for row in getattr(p.index, kind)]
    rows.extend(
        (p.res_type, p.id, *row, p.patient_id, elem)
        for k, row, elem in p.index.composite
        if k == kind
    )
    return rows


def json_rows(versions: Sequence[PreparedVersion]) -> dict[str, list[dict[str, Any]]]:
    """New resources as rows for ``jsonb_populate_recordset``: table name -> rows, each keyed
    by its table's columns. One JSON document carries every table's rows to one statement
    whose text never changes (the audit trail's ``audit_record``, migration 0023), where
    multi-row VALUES made a new statement, to convert and plan, for every batch size.
    Resources with Consent rules (``consent_rule`` rows) are not for this path."""
    tables: dict[str, list[dict[str, Any]]] = {"resource": []}
    for p in versions:
        if p.consent:
            raise ValueError("json_rows: Consent versions need consent_rule rows")
        tables["resource"].append(
            {
                "res_type": p.res_type,
                "id": p.id,
                "version_id": p.version_id,
                "last_updated": p.last_updated,
                "deleted": False,
                "patient_id": p.patient_id,
                "content_hash": None if p.content_hash is None else "\\x" + p.content_hash.hex(),
                "content": p.content,
            }
        )
        for kind, rows in _index_rows(p):
            table = INDEX_TABLES[kind][0]
            names = INDEX_NAMES[kind]
            tables.setdefault(table, []).extend(dict(zip(names, row, strict=True)) for row in rows)
    return tables


def _index_rows(p: PreparedVersion) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    for kind in INDEX_TABLES:
        rows = _index_rows_of(p, kind)
        if rows:
            yield kind, rows


class Session:
    """One connection in one transaction. Created by :meth:`Repository.session`.

    ``visibility`` (None: unrestricted) is what the caller may touch. Reads that serve
    resources compile it into their SQL (:meth:`visible`); writes are checked against it
    before (the version replaced or deleted) and after (the version written, at
    :meth:`check_writes`, before commit), so a refused write leaves nothing behind.
    """

    def __init__(self, conn: AsyncConnection[TupleRow], visibility: Visibility | None = None):
        self.conn = conn
        self.visibility = visibility
        self._written: list[tuple[str, str, str]] = []  # (permission, type, id) to check
        # Rows this transaction found the caller may change so (``may``), each locked by
        # the caller's FOR UPDATE read: the write that follows need not ask again.
        self._cleared: set[tuple[str, str, str]] = set()

    # --- access --------------------------------------------------------------------------
    def visible(
        self,
        permission: str,
        r: sql.Identifier,
        res_type: str | None,
        *,
        record_of: str | None = None,
    ) -> sql.Composable:
        """SQL: the caller may touch row ``r`` with ``permission``. ``record_of``: the query
        reads that patient's record, whose rows the consent condition then decides from the
        patient's rules read once per query (store/consent_sql.py)."""
        if self.visibility is None:
            return sql.SQL("true")
        compiler = Compiler(visibility=self.visibility)
        if record_of is not None:
            compiler.reads_record_of(r, record_of)
        return compiler.visible(permission, r, res_type)

    async def _allowed(self, permission: str, keys: Sequence[tuple[str, str]]) -> bool:
        """Every (type, id) of ``keys`` is a current row the caller may touch so."""
        return await self._refused(permission, keys) is None

    async def _refused(
        self, permission: str, keys: Sequence[tuple[str, str]]
    ) -> tuple[str, str] | None:
        """The first (type, id) of ``keys`` the caller may not touch so, or None."""
        if self.visibility is None or not keys:
            return None
        r = sql.Identifier("r")
        by_type: dict[str, list[str]] = {}
        for res_type, id in keys:
            by_type.setdefault(res_type, []).append(id)
        for res_type, ids in by_type.items():
            if not self.visibility.covers(res_type, permission):
                return res_type, ids[0]
            query = sql.SQL(
                "SELECT r.id FROM resource r WHERE r.res_type = {t} AND r.id = ANY({ids}) AND {v}"
            ).format(
                t=sql.Literal(res_type),
                ids=sql.Literal(sorted(set(ids))),
                v=self.visible(permission, r, res_type),
            )
            cur = await self.conn.execute(query)
            allowed = {row[0] for row in await cur.fetchall()}
            for id in ids:
                if id not in allowed:
                    return res_type, id
        return None

    def require_covers(self, permission: str, res_type: str) -> None:
        """403 when the caller's scopes allow no ``permission`` on any ``res_type`` at all:
        asked before any row is looked at, so the answer says nothing about the data."""
        if self.visibility is not None and not self.visibility.covers(res_type, permission):
            raise Forbidden(
                f"This token does not permit {_VERBS.get(permission, permission)} of"
                f" {res_type} (its scopes do not cover it)"
            )

    def chooses_ids(self, res_type: str) -> bool:
        """Whether the caller may create ``res_type`` resources at ids of its choosing
        (update-as-create, R4 http.html#upsert): only one that may change every row of the
        type (True without a visibility). For any other caller, an id it cannot change is
        either free or someone else's, and answering a PUT there by creating in one case
        and refusing in the other would tell it which: such callers create with POST."""
        return self.visibility is None or self.visibility.reaches_every(res_type, "u")

    async def may(self, permission: str, res_type: str, id: str) -> bool:
        """Whether the caller may touch the current row (type, id) so (True without a
        visibility: --open and internal jobs). Asked of a row locked for update, a yes holds
        for the change of it this transaction makes (``replace``, ``tombstone``)."""
        allowed = await self._allowed(permission, [(res_type, id)])
        if allowed:
            self._cleared.add((permission, res_type, id))
        return allowed

    async def _require(self, permission: str, res_type: str, id: str) -> None:
        if (permission, res_type, id) in self._cleared:
            return
        if not await self._allowed(permission, [(res_type, id)]):
            raise Forbidden(refusal(permission, res_type, id))

    async def check_writes(self) -> None:
        """Before commit: every version written is one the caller may have written."""
        written, self._written = self._written, []
        for permission in PERMISSION_ORDER:
            keys = [(t, i) for p, t, i in written if p == permission]
            refused = await self._refused(permission, keys)
            if refused is not None:
                raise Forbidden(refusal(permission, *refused))

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

    async def readable(self, res_type: str, id: str) -> StoredVersion | None:
        """The current version if the caller may read it; None also when it may not (404)."""
        if self.visibility is None:
            return await self.current(res_type, id)
        r = sql.Identifier("r")
        query = sql.SQL(
            "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.deleted, r.content,"
            " r.content_hash, r.patient_id FROM resource r"
            " WHERE r.res_type = {t} AND r.id = {i} AND {v}"
        ).format(t=sql.Literal(res_type), i=sql.Literal(id), v=self.visible("r", r, res_type))
        cur = await self.conn.execute(query)
        row = await cur.fetchone()
        return _stored(row) if row else None

    async def readable_version(
        self, res_type: str, id: str, version_id: int
    ) -> StoredVersion | None:
        """One version (vread) if the caller may read it: the row's own compartment key, and
        a granular scope's criteria as the resource's current index rows answer them."""
        if self.visibility is None:
            return await self.version(res_type, id, version_id)
        r = sql.Identifier("r")
        parts = [
            sql.SQL(
                "SELECT r.res_type, r.id, r.version_id, r.last_updated, r.deleted, r.content,"
                " r.content_hash, r.patient_id FROM {tb} r WHERE r.res_type = {t} AND r.id = {i}"
                " AND r.version_id = {n} AND {v}"
            ).format(
                tb=sql.Identifier(table),
                t=sql.Literal(res_type),
                i=sql.Literal(id),
                n=sql.Literal(version_id),
                v=self.visible("r", r, res_type),
            )
            for table in ("resource", "resource_history")
        ]
        cur = await self.conn.execute(sql.SQL(" UNION ALL ").join(parts))
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
        if self.visibility is not None:
            self._written.append(("c", p.res_type, p.id))
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
            await self._write_consent(p)

    async def _write_consent(self, p: PreparedVersion, *, replacing: bool = False) -> None:
        if p.res_type != "Consent":
            return
        if replacing:
            await self.conn.execute(_DELETE_CONSENT, (p.id,))
        rows = _consent_rows(p.id, p.patient_id, p.consent)
        if rows:
            async with self.conn.cursor() as cur:
                await cur.executemany(_INSERT_CONSENT, rows)

    async def replace(self, p: PreparedVersion) -> None:
        if self.visibility is not None:
            await self._require("u", p.res_type, p.id)  # the version being replaced
            self._written.append(("u", p.res_type, p.id))  # and the one replacing it
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
            await self._write_consent(p, replacing=True)

    async def tombstone(self, res_type: str, id: str, version_id: int, at: datetime) -> None:
        """Delete: the current version moves to history, a tombstone version takes its place."""
        if self.visibility is not None:
            await self._require("d", res_type, id)
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
            if res_type == "Consent":
                await self.conn.execute(_DELETE_CONSENT, (id,))

    async def insert_many(self, versions: Sequence[PreparedVersion]) -> None:
        """Insert new resources in bulk (COPY): transactions' fast path."""
        await self.insert_encoded(EncodedBatch.of([encode(p) for p in versions]))

    async def insert_encoded(self, batch: EncodedBatch) -> None:
        """Insert new resources from their COPY lines (store/copy_rows.py): one COPY per
        table; the loader's workers make the lines, so this only sends bytes."""
        if not len(batch):
            return
        if self.visibility is not None:
            self._written.extend(("c", res_type, id) for res_type, id in batch.keys)
        async with self.conn.cursor() as cur:
            async with cur.copy(_COPY_RESOURCE) as copy:
                await copy.write(batch.resource)
            for kind, lines in zip(INDEX_KINDS, batch.indexes, strict=True):
                if lines:
                    async with cur.copy(_COPY_INDEX[kind]) as copy:
                        await copy.write(lines)
            consent = [
                row
                for _, id, patient_id, rules in batch.consent
                for row in _consent_rows(id, patient_id, rules)
            ]
            if consent:
                await cur.executemany(_INSERT_CONSENT, consent)

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

    async def patients_born_between(
        self, low: date, high: date, limit: int
    ) -> list[tuple[str, str]]:
        """(id, content) of live Patients whose birthDate falls in [low, high), by id, at most
        ``limit``: the blocking query of identity matching, served by ``search_date_low``."""
        cur = await self.conn.execute(
            _PATIENTS_BORN_BETWEEN,
            (datetime.combine(low, time(), UTC), datetime.combine(high, time(), UTC), limit),
        )
        return [(row[0], row[1]) for row in await cur.fetchall()]

    async def patients_after(self, after_id: str, limit: int) -> list[tuple[str, str]]:
        """(id, content) of live Patients with ids after ``after_id``: a keyset page."""
        cur = await self.conn.execute(_PATIENTS_AFTER, (after_id, limit))
        return [(row[0], row[1]) for row in await cur.fetchall()]

    async def analyze(self, tables: Sequence[str] = ANALYZED_TABLES) -> None:
        """Refresh planner statistics (with the extended ones of migration 0005) after a bulk
        load: without them the first queries on fresh data pick plans thousands of times slower."""
        if unknown := set(tables) - set(ANALYZED_TABLES):
            raise ValueError(f"not a table of the store: {sorted(unknown)}")
        await self.conn.execute(
            sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables)))
        )

    async def tables_by_size(self) -> list[str]:
        """The tables ``analyze`` covers, largest first."""
        cur = await self.conn.execute(
            "SELECT c.relname FROM pg_class c JOIN unnest(%s::text[]) t(name)"
            " ON c.oid = to_regclass(t.name) ORDER BY pg_relation_size(c.oid) DESC, c.relname",
            (list(ANALYZED_TABLES),),
        )
        return [row[0] for row in await cur.fetchall()]

    async def fetch(self, query: sql.SQL | sql.Composed) -> list[tuple[Any, ...]]:
        text, params = bind(query)  # values bound: one text per query shape
        cur = await self.conn.execute(text, params)
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
            # UTF8: COPY data is sent as bytes made in that encoding (store/copy_rows.py).
            kwargs={"autocommit": True, "client_encoding": "UTF8"},
            configure=configure,
        )

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def session(
        self, *, write: bool = True, visibility: Visibility | None = None
    ) -> AsyncIterator[Session]:
        """A session whose writes commit together when the block ends, or not at all.

        ``write=False`` skips BEGIN/COMMIT: each statement then reads its own snapshot, which
        is all a single read or search needs, at a third of the round trips. ``visibility``
        restricts what the session may touch (store/access.py); a write it does not allow
        raises Forbidden before commit, so the whole transaction rolls back.
        """
        async with self.pool.connection() as conn:
            if write:
                async with conn.transaction():
                    session = Session(conn, visibility)
                    yield session
                    await session.check_writes()
            else:
                # Read-only: what consent_rule holds for this access, looked up now.
                yield Session(conn, await consent_sql.settle(conn, visibility))

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
