"""The sender side: a patient's SMART Health Links in PostgreSQL (create, list, pause, revoke).

A link's files are encrypted once, here, with a fresh key; the key goes back to the caller
inside the shlink and is never stored (migration 0011). Every statement names the owner
(``patient_id``), so one patient can neither see nor change another's links: an id that is
not the caller's is answered exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.fhir.validation import validate_resource
from healthmesh.share import jwe
from healthmesh.share.errors import InvalidRequest, LinkNotFound
from healthmesh.share.passcode import MAX_PASSCODE, hash_passcode
from healthmesh.share.shl import (
    InvalidLink,
    LinkPayload,
    check_label,
    new_id,
    new_key,
    normalise_flag,
)

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
UrlOf = Callable[[str], str]  # a link id -> the link's url
FHIR_JSON = "application/fhir+json"
SHC = "application/smart-health-card"


@dataclass(frozen=True, slots=True)
class ShareFile:
    """One plaintext file to share: its content type and bytes."""

    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class NewLink:
    flag: str = ""
    label: str | None = None
    exp: int | None = None  # epoch seconds
    passcode: str | None = None
    single_use: bool = False  # one-time: served to the first receiver only (migration 0016)


def bundle_file(bundle: object) -> ShareFile:
    """The Bundle to share as a file, once it is a structurally valid R4 Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("bundle must be a FHIR Bundle (a JSON object)")
    issues = validate_resource(bundle, expected_type="Bundle")
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        where = "; ".join(f"{i.expression or 'Bundle'}: {i.diagnostics}" for i in errors[:5])
        raise InvalidRequest(f"bundle is not a valid R4 Bundle: {where}")
    return ShareFile(FHIR_JSON, orjson.dumps(bundle))


def _check(new: NewLink, files: list[ShareFile], now: int) -> str:
    try:
        flag = normalise_flag(new.flag)
        check_label(new.label)
    except InvalidLink as error:
        raise InvalidRequest(str(error)) from None
    if not files:
        raise InvalidRequest("a link needs at least one file")
    if "U" in flag and len(files) != 1:
        raise InvalidRequest("a U (direct file) link holds exactly one file")
    if ("P" in flag) != (new.passcode is not None):
        raise InvalidRequest("a passcode goes with flag P, and flag P needs a passcode")
    if new.passcode is not None and not 0 < len(new.passcode) <= MAX_PASSCODE:
        raise InvalidRequest(f"the passcode must be 1..{MAX_PASSCODE} characters")
    if new.exp is not None and new.exp <= now:
        raise InvalidRequest("exp must be in the future (epoch seconds)")
    if new.single_use and "L" in flag:
        # L promises the receiver it may come back for updates; one-time says it may not.
        raise InvalidRequest("a one-time link cannot be long-term (flag L)")
    return flag


def _status(row: dict[str, Any], now: datetime) -> str:
    if row["status"] != "active":
        return str(row["status"])
    if row["used_at"] is not None:
        return "used"
    if row["exp"] is not None and row["exp"] <= now:
        return "expired"
    if row["attempts_left"] == 0:
        return "exhausted"
    return "active"


_COLUMNS = (
    "l.id, l.flag, l.label, l.exp, l.status, l.attempts_left, l.created_at,"
    " l.single_use, l.used_at,"
    " (SELECT count(*) FROM shl_access a WHERE a.link_id = l.id) AS accesses,"
    " (SELECT coalesce(jsonb_agg(jsonb_build_object('contentType', f.content_type,"
    " 'size', length(f.jwe)) ORDER BY f.seq), '[]') FROM shl_file f WHERE f.link_id = l.id)"
    " AS files, now() AS now"
)


def describe(row: dict[str, Any], url: str) -> dict[str, Any]:
    """A link as the management API shows it (never the key: it is not kept)."""
    body: dict[str, Any] = {
        "id": row["id"],
        "url": url,
        "flag": row["flag"],
        "status": _status(row, row["now"]),
        "created": row["created_at"].isoformat(),
        "files": row["files"],
        "accessCount": row["accesses"],
        "singleUse": row["single_use"],
    }
    if row["label"] is not None:
        body["label"] = row["label"]
    if row["exp"] is not None:
        body["exp"] = int(row["exp"].timestamp())
    if row["attempts_left"] is not None:
        body["remainingAttempts"] = row["attempts_left"]
    if row["used_at"] is not None:
        body["used"] = row["used_at"].isoformat()
    return body


def _dicts(cursor_rows: list[tuple[Any, ...]], names: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in cursor_rows]


class LinkStore:
    def __init__(self, pool: Pool, *, attempts: int) -> None:
        self.pool = pool
        self.attempts = attempts  # lifetime budget of wrong passcodes of a new P link

    async def create(
        self, patient: str, new: NewLink, files: list[ShareFile], url_of: UrlOf
    ) -> tuple[LinkPayload, dict[str, Any]]:
        """Encrypt ``files`` under a new key and store the link; the payload (with the key)
        is returned to the caller once. ``url_of(id)`` makes the link's url."""
        now = int(datetime.now(UTC).timestamp())
        flag = _check(new, files, now)
        link_id, key = new_id(), new_key()
        url = url_of(link_id)
        try:
            payload = LinkPayload(url=url, key=key, exp=new.exp, flag=flag, label=new.label)
        except InvalidLink as error:
            raise InvalidRequest(str(error)) from None
        digest = salt = None
        if new.passcode is not None:
            digest, salt = hash_passcode(new.passcode)
        # DEFLATE + AES-GCM of a whole record is CPU work: off the event loop.
        encrypted = await asyncio.to_thread(
            lambda: [(f.content_type, jwe.encrypt(f.content, key, f.content_type)) for f in files]
        )
        exp = datetime.fromtimestamp(new.exp, UTC) if new.exp is not None else None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO shl_link (id, patient_id, flag, label, exp, passcode_hash,"
                " passcode_salt, attempts_left, single_use)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    link_id,
                    patient,
                    flag,
                    new.label,
                    exp,
                    digest,
                    salt,
                    None if digest is None else self.attempts,
                    new.single_use,
                ),
            )
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO shl_file (link_id, seq, content_type, jwe) VALUES (%s, %s, %s, %s)",
                    [(link_id, i, ct, token) for i, (ct, token) in enumerate(encrypted)],
                )
        return payload, await self.get(patient, link_id, url)

    async def _rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM shl_link l WHERE {where} ORDER BY l.created_at DESC",  # noqa: S608
                params,
            )
            rows = await cur.fetchall()
            names = [d.name for d in cur.description or ()]
        return _dicts(rows, names)

    async def get(self, patient: str, link_id: str, url: str) -> dict[str, Any]:
        rows = await self._rows("l.id = %s AND l.patient_id = %s", (link_id, patient))
        if not rows:
            raise LinkNotFound("you have no link with this id")
        return describe(rows[0], url)

    async def owned(self, patient: str, url_of: UrlOf) -> list[dict[str, Any]]:
        rows = await self._rows("l.patient_id = %s", (patient,))
        return [describe(r, url_of(r["id"])) for r in rows]

    async def set_status(self, patient: str, link_id: str, status: str) -> None:
        """Pause (``paused``), resume (``active``) or revoke (``revoked``, for good)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE shl_link SET status = %s WHERE id = %s AND patient_id = %s"
                " AND status <> 'revoked' RETURNING id",
                (status, link_id, patient),
            )
            found = await cur.fetchone()
            if found is None:
                cur = await conn.execute(
                    "SELECT status FROM shl_link WHERE id = %s AND patient_id = %s",
                    (link_id, patient),
                )
                row = await cur.fetchone()
                if row is None:
                    raise LinkNotFound("you have no link with this id")
                if status != "revoked":
                    raise InvalidRequest("this link is revoked; revocation is final")
            if status == "revoked":
                # Outstanding file locations die with the link.
                await conn.execute("DELETE FROM shl_location WHERE link_id = %s", (link_id,))

    async def accesses(self, patient: str, link_id: str | None = None) -> list[dict[str, Any]]:
        """Every access to the patient's links (or to one of them), newest first."""
        async with self.pool.connection() as conn:
            if link_id is not None:
                cur = await conn.execute(
                    "SELECT 1 FROM shl_link WHERE id = %s AND patient_id = %s", (link_id, patient)
                )
                if await cur.fetchone() is None:
                    raise LinkNotFound("you have no link with this id")
            cur = await conn.execute(
                "SELECT a.link_id, a.at, a.recipient, a.kind, a.outcome FROM shl_access a"
                " JOIN shl_link l ON l.id = a.link_id"
                " WHERE l.patient_id = %s AND (%s::text IS NULL OR l.id = %s)"
                " ORDER BY a.at DESC, a.id DESC",
                (patient, link_id, link_id),
            )
            rows = await cur.fetchall()
        return [
            {
                "link": r[0],
                "time": r[1].isoformat(),
                "recipient": r[2],
                "kind": r[3],
                "outcome": r[4],
            }
            for r in rows
        ]
