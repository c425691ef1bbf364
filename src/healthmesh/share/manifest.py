"""The receiver side of the server: manifest, direct file (U flag), file locations.

None of these needs a token: the link is the capability (SHL IG). Every request for a link
that exists is recorded in ``shl_access`` with the recipient it names and its outcome, in the
same transaction as its effects.

The passcode limit is a **lifetime** budget (IG): the link row is locked (``FOR UPDATE``)
while a passcode is checked, and a wrong one decrements ``attempts_left`` in that same
transaction, so concurrent guesses, from any number of server processes, never spend more
than the budget; at zero the link is dead (404).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.share.errors import (
    InvalidRequest,
    LinkNotFound,
    MethodNotAllowed,
    ShareError,
    TooManyRequests,
    WrongPasscode,
)
from healthmesh.share.passcode import MAX_PASSCODE, check_passcode
from healthmesh.share.settings import ShareSettings

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]
Conn = AsyncConnection[TupleRow]
LocationOf = Callable[[str], str]  # a ticket -> its URL


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    recipient: str
    passcode: str | None = None
    embedded_length_max: int | None = None


@dataclass(slots=True)
class _Link:
    id: str
    flag: str
    status: str
    exp: datetime | None
    passcode_hash: bytes | None
    passcode_salt: bytes | None
    attempts_left: int | None
    now: datetime

    @property
    def active(self) -> bool:
        return (
            self.status == "active"
            and (self.exp is None or self.exp > self.now)
            and self.attempts_left != 0
        )


_LINK = (
    "SELECT id, flag, status, exp, passcode_hash, passcode_salt, attempts_left, now()"
    " FROM shl_link WHERE id = %s"
)


def parse_manifest_request(body: object, *, max_recipient: int) -> ManifestRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the manifest request is a JSON object")
    recipient = body.get("recipient")
    if not isinstance(recipient, str) or not recipient.strip():
        raise InvalidRequest("recipient is required (a string naming who asks)")
    passcode = body.get("passcode")
    if passcode is not None and (not isinstance(passcode, str) or len(passcode) > MAX_PASSCODE):
        raise InvalidRequest("passcode must be a string")
    embedded = body.get("embeddedLengthMax")
    if embedded is not None and (
        not isinstance(embedded, int) or isinstance(embedded, bool) or embedded < 0
    ):
        raise InvalidRequest("embeddedLengthMax must be a non-negative integer")
    return ManifestRequest(check_recipient(recipient, max_recipient), passcode, embedded)


def check_recipient(recipient: str | None, max_recipient: int) -> str:
    if recipient is None or not recipient.strip():
        raise InvalidRequest("recipient is required (a string naming who asks)")
    if len(recipient) > max_recipient:
        raise InvalidRequest(f"recipient is at most {max_recipient} characters")
    return recipient.strip()


async def _record(conn: Conn, link_id: str, recipient: str, kind: str, outcome: str) -> None:
    await conn.execute(
        "INSERT INTO shl_access (link_id, recipient, kind, outcome) VALUES (%s, %s, %s, %s)",
        (link_id, recipient, kind, outcome),
    )


async def _load(conn: Conn, link_id: str, *, lock: bool) -> _Link | None:
    cur = await conn.execute(_LINK + (" FOR UPDATE" if lock else ""), (link_id,))
    row = await cur.fetchone()
    return None if row is None else _Link(*row)


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


class ManifestService:
    def __init__(self, pool: Pool, settings: ShareSettings) -> None:
        self.pool = pool
        self.settings = settings

    async def _poll(self, conn: Conn, link: _Link) -> None:
        """L links: a fixed window per link; over the limit is 429 with Retry-After."""
        cur = await conn.execute(
            "UPDATE shl_link SET"
            " poll_hits = CASE WHEN poll_window > now() - make_interval(secs => %(w)s)"
            "   THEN poll_hits + 1 ELSE 1 END,"
            " poll_window = CASE WHEN poll_window > now() - make_interval(secs => %(w)s)"
            "   THEN poll_window ELSE now() END"
            " WHERE id = %(id)s RETURNING poll_hits,"
            " ceil(extract(epoch FROM poll_window + make_interval(secs => %(w)s) - now()))::int",
            {"w": self.settings.poll_window, "id": link.id},
        )
        row = await cur.fetchone()
        assert row is not None
        if row[0] > self.settings.poll_limit:
            raise TooManyRequests(max(1, int(row[1])))

    async def manifest(
        self, link_id: str, request: ManifestRequest, location_of: LocationOf
    ) -> dict[str, Any]:
        """The manifest ``{files: [...]}``, or LinkNotFound / WrongPasscode / TooManyRequests;
        the access is recorded (and a wrong passcode spent) whatever the outcome: refusals
        are raised only after the transaction that records them has committed."""
        refused: ShareError | None = None
        body: dict[str, Any] = {}
        async with self.pool.connection() as conn, conn.transaction():
            link = await _load(conn, link_id, lock=False)
            if link is None:
                raise LinkNotFound()
            if "P" in link.flag:
                link = await _load(conn, link_id, lock=True)  # serialise guesses on this link
                assert link is not None
            try:
                body = await self._files(conn, link, request, location_of)
                outcome = "ok"
            except (LinkNotFound, WrongPasscode, TooManyRequests) as error:
                refused, outcome = error, _outcome(error)
                if isinstance(error, WrongPasscode):
                    await conn.execute(
                        "UPDATE shl_link SET attempts_left = %s WHERE id = %s",
                        (error.remaining, link.id),
                    )
            await _record(conn, link.id, request.recipient, "manifest", outcome)
        if refused is not None:
            raise refused
        return body

    async def _files(
        self, conn: Conn, link: _Link, request: ManifestRequest, location_of: LocationOf
    ) -> dict[str, Any]:
        if not link.active:
            raise LinkNotFound()
        if "L" in link.flag:
            await self._poll(conn, link)
        if "P" in link.flag:
            assert link.passcode_hash is not None
            assert link.passcode_salt is not None
            assert link.attempts_left is not None
            right = request.passcode is not None and await asyncio.to_thread(
                check_passcode, request.passcode, link.passcode_hash, link.passcode_salt
            )
            if not right:
                raise WrongPasscode(link.attempts_left - 1)
        cur = await conn.execute(
            "SELECT seq, content_type, jwe, last_updated FROM shl_file WHERE link_id = %s"
            " ORDER BY seq",
            (link.id,),
        )
        files: list[dict[str, Any]] = []
        tickets: list[tuple[bytes, str, int, str, int]] = []
        for seq, content_type, token, last_updated in await cur.fetchall():
            entry: dict[str, Any] = {"contentType": content_type}
            limit = request.embedded_length_max
            if limit is not None and len(token) <= limit:
                entry["embedded"] = token
            else:
                ticket = secrets.token_urlsafe(32)
                tickets.append(
                    (_digest(ticket), link.id, seq, request.recipient, self.settings.location_ttl)
                )
                entry["location"] = location_of(ticket)
            entry["lastUpdated"] = last_updated.isoformat()
            files.append(entry)
        if tickets:
            async with conn.cursor() as c:
                await c.executemany(
                    "INSERT INTO shl_location (digest, link_id, seq, recipient, expires_at)"
                    " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
                    tickets,
                )
            if secrets.randbelow(64) == 0:  # now and then, forget locations long dead
                await conn.execute("DELETE FROM shl_location WHERE expires_at < now()")
        body: dict[str, Any] = {"files": files}
        if "L" in link.flag:
            body["status"] = "can-change"
        return body

    async def direct(self, link_id: str, recipient: str) -> str:
        """U flag: ``GET url?recipient=…`` answers the single encrypted file."""
        async with self.pool.connection() as conn, conn.transaction():
            link = await _load(conn, link_id, lock=False)
            if link is None:
                raise LinkNotFound()
            if "U" not in link.flag:
                raise MethodNotAllowed("this link has no U flag: POST to it for its manifest")
            token: str | None = None
            if link.active:
                cur = await conn.execute(
                    "SELECT jwe FROM shl_file WHERE link_id = %s ORDER BY seq LIMIT 1", (link.id,)
                )
                row = await cur.fetchone()
                token = None if row is None else str(row[0])
            await _record(conn, link.id, recipient, "direct", "ok" if token else "inactive")
        if token is None:
            raise LinkNotFound()
        return token

    async def location(self, ticket: str) -> str:
        """A file by the location a manifest handed out: live for location_ttl, and only
        while its link is active."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT t.link_id, t.recipient, t.expires_at > now(), f.jwe FROM shl_location t"
                " JOIN shl_file f ON f.link_id = t.link_id AND f.seq = t.seq WHERE t.digest = %s",
                (_digest(ticket),),
            )
            row = await cur.fetchone()
            if row is None:
                raise LinkNotFound("no file at this location (unknown or expired)")
            link_id, recipient, live, token = row
            link = await _load(conn, link_id, lock=False)
            served = bool(live) and link is not None and link.active
            outcome = "ok" if served else ("expired" if not live else "inactive")
            await _record(conn, link_id, recipient, "file", outcome)
        if not served:
            raise LinkNotFound("no file at this location (unknown or expired)")
        return str(token)


def _outcome(refused: Exception) -> str:
    if isinstance(refused, WrongPasscode):
        return "wrong_passcode"
    if isinstance(refused, TooManyRequests):
        return "rate_limited"
    return "inactive"
