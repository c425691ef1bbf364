"""The receiver side of the server: manifest, direct file (U flag), file locations.

None of these needs a token: the link is the capability (SHL IG). Every request for a link
that exists is recorded in ``shl_access`` with the recipient it names and its outcome, in the
same transaction as its effects.

The passcode limit is a **lifetime** budget (IG): the link row is locked (``FOR UPDATE``)
while a passcode is checked, and a wrong one decrements ``attempts_left`` in that same
transaction, so concurrent guesses, from any number of server processes, never spend more
than the budget; at zero the link is dead (404).

A one-time link (``single_use``, migration 0016) is served once: its manifest or direct GET
runs under the same row lock and sets ``used_at`` in the transaction that serves it, so of
concurrent receivers exactly one gets the file and the rest 404 ("used up", SHL IG). The
locations that one manifest handed out stay valid for their ticket's lifetime.
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
    single_use: bool
    used: bool
    now: datetime

    @property
    def live(self) -> bool:
        """Active, not expired, passcode budget left (a used one-time link still is)."""
        return (
            self.status == "active"
            and (self.exp is None or self.exp > self.now)
            and self.attempts_left != 0
        )

    @property
    def active(self) -> bool:
        return self.live and not self.used


_LINK = (
    "SELECT id, flag, status, exp, passcode_hash, passcode_salt, attempts_left, single_use,"
    " used_at IS NOT NULL, now() FROM shl_link WHERE id = %s"
)


_LINK_WITH_FILES = (
    "SELECT l.id, l.flag, l.status, l.exp, l.passcode_hash, l.passcode_salt,"
    " l.attempts_left, l.single_use, l.used_at IS NOT NULL, now(),"
    " f.seq, f.content_type, f.last_updated,"
    " CASE WHEN length(f.jwe) <= %s THEN f.jwe END"
    " FROM shl_link l LEFT JOIN shl_file f ON f.link_id = l.id WHERE l.id = %s"
    " ORDER BY f.seq"
)
_LINK_WITH_FILES_LOCKED = _LINK_WITH_FILES + " FOR UPDATE OF l"


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
        """The manifest ``{files: [...]}``, or LinkNotFound / WrongPasscode / TooManyRequests.

        The access is recorded (and a wrong passcode spent) whatever the outcome; refusals
        are raised only once that record is written. A plain link takes two statements (read
        the link with its files; record the access with its locations); a P link runs in a
        transaction holding the link's row lock from the read to the record.
        """
        async with self.pool.connection() as conn:
            link, files = await self._load_with_files(conn, link_id, request, lock=False)
            if "P" not in link.flag and not link.single_use:
                body, refused = await self._answer(conn, link, files, request, location_of)
            else:
                async with conn.transaction():  # committed before a refusal is raised
                    link, files = await self._load_with_files(conn, link_id, request, lock=True)
                    body, refused = await self._answer(conn, link, files, request, location_of)
        if refused is not None:
            raise refused
        return body

    async def _load_with_files(
        self, conn: Conn, link_id: str, request: ManifestRequest, *, lock: bool
    ) -> tuple[_Link, list[tuple[Any, ...]]]:
        """The link and its files (the JWE only where it will be embedded)."""
        cur = await conn.execute(
            _LINK_WITH_FILES_LOCKED if lock else _LINK_WITH_FILES,
            (request.embedded_length_max, link_id),
        )
        rows = await cur.fetchall()
        if not rows:
            raise LinkNotFound()
        return _Link(*rows[0][:10]), [r[10:] for r in rows if r[10] is not None]

    async def _answer(
        self,
        conn: Conn,
        link: _Link,
        files: list[tuple[Any, ...]],
        request: ManifestRequest,
        location_of: LocationOf,
    ) -> tuple[dict[str, Any], ShareError | None]:
        """The manifest, or the refusal to raise; the access recorded either way."""
        refused: ShareError | None = None
        body: dict[str, Any] = {}
        tickets: list[tuple[bytes, int]] = []
        spent: int | None = None
        try:
            body = await self._check_and_list(conn, link, files, request, location_of, tickets)
            outcome = "ok"
        except (LinkNotFound, WrongPasscode, TooManyRequests) as error:
            refused, outcome = error, _outcome(error)
            if isinstance(error, WrongPasscode):
                spent = error.remaining
        await conn.execute(
            "WITH located AS (INSERT INTO shl_location (digest, link_id, seq, recipient, expires_at)"
            "  SELECT d, %(link)s, s, %(recipient)s, now() + make_interval(secs => %(ttl)s)"
            "  FROM unnest(%(digests)s::bytea[], %(seqs)s::int[]) AS u(d, s)),"
            " spent AS (UPDATE shl_link SET attempts_left = %(left)s"
            "  WHERE id = %(link)s AND %(left)s::int IS NOT NULL),"
            " used AS (UPDATE shl_link SET used_at = now()"
            "  WHERE id = %(link)s AND %(use)s AND single_use)"
            " INSERT INTO shl_access (link_id, recipient, kind, outcome)"
            " VALUES (%(link)s, %(recipient)s, 'manifest', %(outcome)s)",
            {
                "link": link.id,
                "recipient": request.recipient,
                "ttl": self.settings.location_ttl,
                "digests": [d for d, _ in tickets],
                "seqs": [s for _, s in tickets],
                "left": spent,
                "use": outcome == "ok" and link.single_use,
                "outcome": outcome,
            },
        )
        if tickets and secrets.randbelow(64) == 0:  # now and then, forget long-dead locations
            await conn.execute("DELETE FROM shl_location WHERE expires_at < now()")
        return body, refused

    async def _check_and_list(
        self,
        conn: Conn,
        link: _Link,
        files: list[tuple[Any, ...]],
        request: ManifestRequest,
        location_of: LocationOf,
        tickets: list[tuple[bytes, int]],
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
        entries: list[dict[str, Any]] = []
        for seq, content_type, last_updated, embedded in files:
            entry: dict[str, Any] = {"contentType": content_type}
            if embedded is not None:
                entry["embedded"] = embedded
            else:
                ticket = secrets.token_urlsafe(32)
                tickets.append((_digest(ticket), seq))
                entry["location"] = location_of(ticket)
            entry["lastUpdated"] = last_updated.isoformat()
            entries.append(entry)
        body: dict[str, Any] = {"files": entries}
        if "L" in link.flag:
            body["status"] = "can-change"
        return body

    async def direct(self, link_id: str, recipient: str) -> str:
        """U flag: ``GET url?recipient=…`` answers the single encrypted file."""
        async with self.pool.connection() as conn, conn.transaction():
            # Locked: a one-time link is consumed by exactly one of concurrent GETs.
            link = await _load(conn, link_id, lock=True)
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
            if token is not None and link.single_use:
                await conn.execute("UPDATE shl_link SET used_at = now() WHERE id = %s", (link.id,))
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
            # ``live``, not ``active``: a one-time link's own manifest handed this ticket out.
            served = bool(live) and link is not None and link.live
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
