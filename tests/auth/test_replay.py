"""One-time JWT ids: the first presentation wins, also when many arrive at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.replay import ReplayGuard

T = TypeVar("T")


async def _with_guard(database_url: str, body: Callable[[ReplayGuard], Awaitable[T]]) -> T:
    pool = AsyncConnectionPool(
        database_url, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        return await body(ReplayGuard(pool))
    finally:
        await pool.close()


def test_a_jti_is_accepted_once_per_issuer(database_url: str) -> None:
    jti = uuid.uuid4().hex

    async def body(guard: ReplayGuard) -> list[bool]:
        later = int(time.time()) + 300
        return [
            await guard.first_use("https://a.example", jti, later),
            await guard.first_use("https://a.example", jti, later),
            await guard.first_use("https://b.example", jti, later),
        ]

    assert asyncio.run(_with_guard(database_url, body)) == [True, False, True]


def test_of_concurrent_presentations_exactly_one_is_first(database_url: str) -> None:
    jti = uuid.uuid4().hex

    async def body(guard: ReplayGuard) -> list[bool]:
        later = int(time.time()) + 300
        return list(
            await asyncio.gather(
                *(guard.first_use("https://c.example", jti, later) for _ in range(16))
            )
        )

    assert sorted(asyncio.run(_with_guard(database_url, body))) == [False] * 15 + [True]


def test_an_expired_entry_no_longer_blocks_and_is_purged(database_url: str) -> None:
    jti = uuid.uuid4().hex

    async def body(guard: ReplayGuard) -> tuple[bool, int, bool]:
        first = await guard.first_use("https://d.example", jti, int(time.time()) - 1)
        purged = await guard.purge()
        again = await guard.first_use("https://d.example", jti, int(time.time()) + 60)
        return first, purged, again

    first, purged, again = asyncio.run(_with_guard(database_url, body))
    assert first and again and purged >= 1


def test_an_empty_jti_is_never_accepted(database_url: str) -> None:
    async def body(guard: ReplayGuard) -> bool:
        return await guard.first_use("https://e.example", "", int(time.time()) + 60)

    assert asyncio.run(_with_guard(database_url, body)) is False
