"""Pending authorizations and codes in PostgreSQL: single use, also under concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.opaque import digest, mint
from healthmesh.store.authorizations import (
    AuthorizationStore,
    CodeRecord,
    Pending,
    Redemption,
)

T = TypeVar("T")


async def _with_store(database_url: str, body: Callable[[AuthorizationStore], Awaitable[T]]) -> T:
    pool = AsyncConnectionPool(
        database_url, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    try:
        return await body(AuthorizationStore(pool))
    finally:
        await pool.close()


def _code(lifetime: int = 60) -> CodeRecord:
    return CodeRecord(
        client_id="app",
        redirect_uri="https://app.example/cb",
        code_challenge="c" * 43,
        scope="openid patient/Observation.rs",
        patient="p1",
        fhir_user="Patient/p1",
        nonce=None,
        expires_at=int(time.time()) + lifetime,
    )


def test_a_code_is_redeemed_once_then_reported_as_reused(database_url: str) -> None:
    code = digest(mint())

    async def body(store: AuthorizationStore) -> list[Redemption]:
        await store.insert_code(code, _code())
        first = await store.redeem(code)
        second = await store.redeem(code)
        assert first.record is not None and first.record.patient == "p1"
        return [first.outcome, second.outcome]

    assert asyncio.run(_with_store(database_url, body)) == [Redemption.FIRST, Redemption.REUSED]


def test_of_concurrent_redemptions_exactly_one_is_first(database_url: str) -> None:
    code = digest(mint())

    async def body(store: AuthorizationStore) -> list[Redemption]:
        await store.insert_code(code, _code())
        results = await asyncio.gather(*(store.redeem(code) for _ in range(12)))
        return sorted((r.outcome for r in results), key=lambda o: o.value)

    outcomes = asyncio.run(_with_store(database_url, body))
    assert outcomes.count(Redemption.FIRST) == 1
    assert outcomes.count(Redemption.REUSED) == 11


def test_an_expired_code_is_unknown_and_an_unissued_one_too(database_url: str) -> None:
    expired, unissued = digest(mint()), digest(mint())

    async def body(store: AuthorizationStore) -> list[Redemption]:
        await store.insert_code(expired, _code(lifetime=-1))
        return [(await store.redeem(expired)).outcome, (await store.redeem(unissued)).outcome]

    assert asyncio.run(_with_store(database_url, body)) == [Redemption.UNKNOWN] * 2


def test_reuse_names_the_grant_issued_from_the_code(database_url: str) -> None:
    code = digest(mint())

    async def body(store: AuthorizationStore) -> tuple[bool, str | None]:
        await store.insert_code(code, _code())
        await store.redeem(code)
        seen_reuse = await store.record_grant(code, "grant-1")
        return seen_reuse, (await store.redeem(code)).grant_id

    assert asyncio.run(_with_store(database_url, body)) == (False, "grant-1")


def test_a_reuse_before_the_grant_is_recorded_is_reported_when_it_is(database_url: str) -> None:
    code = digest(mint())

    async def body(store: AuthorizationStore) -> tuple[str | None, bool]:
        await store.insert_code(code, _code())
        await store.redeem(code)
        early = await store.redeem(code)  # the grant is not recorded yet
        return early.grant_id, await store.record_grant(code, "grant-2")

    assert asyncio.run(_with_store(database_url, body)) == (None, True)


def _pending(browser: str) -> Pending:
    return Pending(
        id=mint(),
        browser_hash=digest(browser),
        client_id="app",
        redirect_uri="https://app.example/cb",
        scope="openid",
        state="s",
        code_challenge="c" * 43,
        nonce=None,
        launch_patient=None,
        expires_at=int(time.time()) + 600,
        idp_state_hash=digest(mint()),
    )


def test_a_consent_decision_needs_the_browser_and_the_csrf_token_and_happens_once(
    database_url: str,
) -> None:
    browser, csrf = mint(), mint()
    pending = _pending(browser)

    async def body(store: AuthorizationStore) -> list[bool]:
        await store.create_pending(pending)
        assert pending.idp_state_hash is not None
        login = await store.take_login(pending.idp_state_hash)
        again = await store.take_login(pending.idp_state_hash)
        await store.logged_in(pending.id, patient="p1", fhir_user="Patient/p1")
        stranger = await store.show_consent(pending.id, digest(mint()), digest(mint()))
        shown = await store.show_consent(pending.id, digest(browser), digest(csrf))
        assert stranger is None and shown is not None and shown.patient == "p1"
        wrong_csrf = await store.take_decision(pending.id, digest(browser), digest(mint()))
        wrong_browser = await store.take_decision(pending.id, digest(mint()), digest(csrf))
        right = await store.take_decision(pending.id, digest(browser), digest(csrf))
        replay = await store.take_decision(pending.id, digest(browser), digest(csrf))
        return [x is not None for x in (login, again, wrong_csrf, wrong_browser, right, replay)]

    assert asyncio.run(_with_store(database_url, body)) == [True, False, False, False, True, False]
