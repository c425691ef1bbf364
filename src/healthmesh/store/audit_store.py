"""The SQL of the audit trail (migration 0014): chain entries, head, checkpoints, keys.

Every AuditEvent is stored twice over: as a normal resource (``resource``, and its search
index rows, so FHIR search and the Patient-compartment rules serve it) and as an
``audit_chain`` entry holding the hashes that make the sequence tamper-evident and the facts
the breach detectors query. Its index rows are packed into one ``audit_index`` row but for
the selective parameters' (store/search/tables.py, migration 0025). Callers pass a
connection that is inside a transaction for writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from healthmesh.fhir.search.extract import IndexRows
from healthmesh.store.copy_rows import INDEX_KINDS
from healthmesh.store.repository import INDEX_TABLES, json_rows
from healthmesh.store.rows import PreparedVersion
from healthmesh.store.search.tables import packed

Conn = AsyncConnection[TupleRow]


ENTRY_COLUMNS = (
    "seq, event_id, recorded, event_hash, prev_hash, hash, kind, client_id, address,"
    " patient_id, action, outcome, system_access, object, types"
)


async def lock_head(conn: Conn) -> tuple[int, bytes]:
    """Lock the chain head until this transaction ends; its (seq, hash)."""
    cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("audit_head is missing: migration 0014 was not applied")
    return int(row[0]), bytes(row[1])


Tables = dict[str, list[Any]]  # table -> rows for audit_record (dicts or orjson.Fragment)


def event_tables(versions: Sequence[PreparedVersion]) -> Tables:
    """Stored versions of AuditEvents as ``audit_record``'s rows: the resource rows, the
    packed index rows (``audit_index``) and the search table rows of the real parameters."""
    doc: Tables = json_rows([replace(v, index=_real_rows(v.index)) for v in versions])
    doc["audit_index"] = [
        {"res_id": v.id, "patient_id": v.patient_id, "rows": _packed_rows(v.index)}
        for v in versions
    ]
    return doc


def joined_tables(parts: Sequence[Tables]) -> Tables:
    """Several batches' rows as one, table by table, in the order given."""
    if len(parts) == 1:
        return parts[0]
    doc: Tables = {}
    for part in parts:
        for table, rows in part.items():
            doc.setdefault(table, []).extend(rows)
    return doc


async def append(
    conn: Conn,
    tables: Tables,
    entries: Sequence[dict[str, Any]],
    *,
    begin: bool = False,
    durable: bool = True,
) -> tuple[int, bytes]:
    """Store events (``tables``: :func:`event_tables`) and chain them (``entries``), in one
    statement (``audit_record``, migration 0023); the new head (seq, hash). With ``begin``,
    in a transaction of its own (BEGIN … COMMIT in the same round trip), else in the
    caller's. ``durable=False`` (own transaction only) commits without waiting for the WAL
    flush."""
    doc: dict[str, Any] = {"resource": [], **tables, "entries": entries}
    # orjson: the batch's one document, serialised in C (datetimes as RFC 3339; Decimal
    # index values as strings, which the numeric columns read back exactly).
    payload = orjson.dumps(doc, default=str).decode()
    if begin and durable and conn.autocommit:
        # One statement in autocommit is a transaction of its own (all of it or none):
        # no BEGIN and COMMIT to send.
        cur = await conn.execute(_RECORD, (payload,))
    elif begin:
        async with conn.pipeline(), conn.transaction():
            if not durable:
                await conn.execute("SET LOCAL synchronous_commit = off")
            cur = await conn.execute(_RECORD, (payload,))
    else:
        cur = await conn.execute(_RECORD, (payload,))
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("audit_record returned nothing")
    return int(row[0]), bytes(row[1])


_RECORD = "SELECT last_seq, last_hash FROM audit_record(%s::jsonb)"


def _real_rows(index: IndexRows) -> IndexRows:
    """The rows of an event that stay in the search tables (tables.AUDIT_REAL_PARAMS)."""
    kept = IndexRows(composite=[c for c in index.composite if not packed(c[1][0])])
    for kind in INDEX_KINDS:
        rows = getattr(index, kind)
        if rows:
            setattr(kept, kind, [row for row in rows if not packed(row[0])])
    return kept


def _packed_rows(index: IndexRows) -> dict[str, list[tuple[Any, ...]]]:
    """The rest, ``audit_index.rows``: per kind, each row's values then its element number."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for kind in INDEX_KINDS:
        values = [(*row, None) for row in getattr(index, kind) if packed(row[0])]
        if values:
            rows[kind] = values
    for kind, row, elem in index.composite:
        if packed(row[0]):
            rows.setdefault(kind, []).append((*row, elem))
    return rows


# --- checkpoints and keys -------------------------------------------------------------------
async def insert_checkpoint(conn: Conn, seq: int, kind: str, hash: bytes, jws: str) -> None:
    await conn.execute(
        "INSERT INTO audit_checkpoint (seq, kind, hash, jws) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (seq, kind) DO NOTHING",
        (seq, kind, hash, jws),
    )


async def checkpoints(conn: Conn) -> list[tuple[int, str, bytes, str]]:
    """(seq, kind, hash, jws) of every checkpoint, oldest first."""
    cur = await conn.execute("SELECT seq, kind, hash, jws FROM audit_checkpoint ORDER BY seq, kind")
    return [(int(r[0]), str(r[1]), bytes(r[2]), str(r[3])) for r in await cur.fetchall()]


async def newest_key(conn: Conn) -> tuple[str, str] | None:
    """(kid, private PEM) of the newest checkpoint key."""
    cur = await conn.execute(
        "SELECT kid, private_pem FROM audit_signing_key ORDER BY created_at DESC LIMIT 1"
    )
    row = await cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None


async def insert_key(conn: Conn, kid: str, private_pem: str, public_jwk: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO audit_signing_key (kid, private_pem, public_jwk) VALUES (%s, %s, %s)"
        " ON CONFLICT (kid) DO NOTHING",
        (kid, private_pem, Jsonb(public_jwk)),
    )


async def public_keys(conn: Conn) -> dict[str, dict[str, Any]]:
    cur = await conn.execute("SELECT kid, public_jwk FROM audit_signing_key")
    return {str(r[0]): dict(r[1]) for r in await cur.fetchall()}


# --- reading the chain ----------------------------------------------------------------------
async def chain_rows(conn: Conn, batch: int = 2000) -> AsyncIterator[tuple[Any, ...]]:
    """Every entry in seq order with its stored AuditEvent: the entry's columns, then the
    resource's content (None when the resource row is gone) and patient_id. Streams with a
    server-side cursor: call inside a (repeatable read) transaction."""
    query = (
        f"SELECT {', '.join('c.' + c.strip() for c in ENTRY_COLUMNS.split(','))},"  # noqa: S608
        " r.content, r.patient_id, r.deleted"
        " FROM audit_chain c LEFT JOIN resource r"
        " ON r.res_type = 'AuditEvent' AND r.id = c.event_id ORDER BY c.seq"
    )
    async with conn.cursor(name="audit_verify") as cur:
        cur.itersize = batch
        await cur.execute(query)
        async for row in cur:
            yield row


async def unchained_events(conn: Conn, limit: int = 100) -> list[str]:
    """Ids of stored AuditEvents that no chain entry names (inserted behind the node's back)."""
    cur = await conn.execute(
        "SELECT r.id FROM resource r WHERE r.res_type = 'AuditEvent'"
        " AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = r.id)"
        " ORDER BY r.last_updated, r.id LIMIT %s",
        (limit,),
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def head(conn: Conn) -> tuple[int, bytes]:
    cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
    row = await cur.fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, bytes(32))


# --- retention ------------------------------------------------------------------------------
async def purge_boundary(conn: Conn, cutoff: datetime, head_seq: int) -> tuple[int, int] | None:
    """(first, last) seq of the oldest run of entries all recorded before ``cutoff``: the
    prefix retention may remove. None when there is nothing to remove."""
    cur = await conn.execute(
        "SELECT (SELECT min(seq) FROM audit_chain),"
        " (SELECT min(seq) FROM audit_chain WHERE recorded >= %s)",
        (cutoff,),
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    first = int(row[0])
    last = int(row[1]) - 1 if row[1] is not None else head_seq
    return (first, last) if last >= first else None


async def entry_hash(conn: Conn, seq: int) -> bytes | None:
    cur = await conn.execute("SELECT hash FROM audit_chain WHERE seq = %s", (seq,))
    row = await cur.fetchone()
    return bytes(row[0]) if row else None


async def delete_through(conn: Conn, last: int) -> int:
    """Remove the entries up to ``last`` and their AuditEvents (current rows, history, index
    rows). The guard trigger lets the chain rows go only in this transaction."""
    await conn.execute("SELECT set_config('healthmesh.audit_purge', 'on', true)")
    cur = await conn.execute("SELECT array_agg(event_id) FROM audit_chain WHERE seq <= %s", (last,))
    row = await cur.fetchone()
    ids: list[str] = list(row[0]) if row and row[0] else []
    if ids:
        for table in ("resource", "resource_history"):
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE res_type = 'AuditEvent' AND id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (ids,),
            )
        await conn.execute("DELETE FROM audit_index WHERE res_id = ANY(%s)", (ids,))
        for table, _ in INDEX_TABLES.values():
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE res_type = 'AuditEvent' AND res_id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (ids,),
            )
    cur = await conn.execute("DELETE FROM audit_chain WHERE seq <= %s", (last,))
    await conn.execute("SELECT set_config('healthmesh.audit_purge', 'off', true)")
    return cur.rowcount


# --- breach queries -------------------------------------------------------------------------
# Each returns (subject, count) rows above a threshold within [since, until).
_MANY_PATIENTS = (
    "SELECT 'client:' || client_id, count(DISTINCT patient_id) FROM audit_chain"
    " WHERE recorded >= %s AND recorded < %s AND kind = 'rest' AND outcome = '0'"
    " AND NOT system_access AND client_id IS NOT NULL AND patient_id IS NOT NULL"
    " GROUP BY client_id HAVING count(DISTINCT patient_id) >= %s"
)
_VOLUME = (
    "SELECT client_id, count(*) FILTER (WHERE recorded >= %(since)s),"
    " count(*) FILTER (WHERE recorded < %(since)s) FROM audit_chain"
    " WHERE recorded >= %(from)s AND recorded < %(until)s AND kind = 'rest'"
    " AND client_id IS NOT NULL GROUP BY client_id"
    " HAVING count(*) FILTER (WHERE recorded >= %(since)s) >= %(minimum)s"
)
_REFUSALS = (
    "SELECT coalesce('client:' || client_id, 'address:' || address), count(*) FROM audit_chain"
    " WHERE recorded >= %s AND recorded < %s AND outcome <> '0'"
    " AND kind IN ('rest', 'token', 'login') AND coalesce(client_id, address) IS NOT NULL"
    " GROUP BY 1 HAVING count(*) >= %s"
)
_PASSCODES = (
    "SELECT 'link:' || object, count(*) FROM audit_chain"
    " WHERE recorded >= %(since)s AND recorded < %(until)s AND kind = 'shared-link'"
    " AND outcome <> '0' AND object IS NOT NULL GROUP BY object HAVING count(*) >= %(n)s"
    " UNION ALL SELECT 'address:' || address, count(*) FROM audit_chain"
    " WHERE recorded >= %(since)s AND recorded < %(until)s AND kind = 'shared-link'"
    " AND outcome <> '0' AND address IS NOT NULL GROUP BY address HAVING count(*) >= %(n)s"
)


async def many_patients(
    conn: Conn, since: datetime, until: datetime, n: int
) -> list[tuple[str, int]]:
    cur = await conn.execute(_MANY_PATIENTS, (since, until, n))
    return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def volumes(
    conn: Conn, start: datetime, since: datetime, until: datetime, minimum: int
) -> list[tuple[str, int, int]]:
    """(client, count in [since, until), count in [start, since)) for busy clients."""
    cur = await conn.execute(
        _VOLUME, {"from": start, "since": since, "until": until, "minimum": minimum}
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]


async def refusals(conn: Conn, since: datetime, until: datetime, n: int) -> list[tuple[str, int]]:
    cur = await conn.execute(_REFUSALS, (since, until, n))
    return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def passcode_failures(
    conn: Conn, since: datetime, until: datetime, n: int
) -> list[tuple[str, int]]:
    cur = await conn.execute(_PASSCODES, {"since": since, "until": until, "n": n})
    return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]


async def alerted(conn: Conn, key: str, since: datetime) -> bool:
    """Whether an alert for ``key`` (detector:subject) was already raised since then."""
    cur = await conn.execute(
        "SELECT 1 FROM audit_chain WHERE kind = 'alert' AND object = %s AND recorded >= %s LIMIT 1",
        (key, since),
    )
    return await cur.fetchone() is not None


async def exposures(
    conn: Conn, client_id: str, since: datetime, until: datetime
) -> list[tuple[str, int, datetime, datetime, list[str]]]:
    """Per patient whose data ``client_id`` was given: (patient, events, first, last, types)."""
    cur = await conn.execute(
        "WITH hits AS (SELECT patient_id, types, recorded FROM audit_chain"
        " WHERE client_id = %s AND recorded >= %s AND recorded < %s AND outcome = '0'"
        " AND kind IN ('rest', 'shared-link') AND patient_id IS NOT NULL)"
        " SELECT h.patient_id, count(*), min(h.recorded), max(h.recorded),"
        " coalesce((SELECT array_agg(DISTINCT t ORDER BY t) FROM hits h2, unnest(h2.types) t"
        "  WHERE h2.patient_id = h.patient_id), '{}')"
        " FROM hits h GROUP BY h.patient_id ORDER BY h.patient_id",
        (client_id, since, until),
    )
    return [(str(r[0]), int(r[1]), r[2], r[3], list(r[4])) for r in await cur.fetchall()]
