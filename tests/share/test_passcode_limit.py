"""The passcode budget of a P link is for its lifetime, and holds under concurrent guessing
sent to two server processes on one database (SHL IG: 401 {"remainingAttempts": n})."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from share_support import Patients, register_client, secured_node, summary_bundle

from healthmesh.share.shl import decode

from conftest import ServerThread

BUDGET = 10  # share_support.SHARE_SETTINGS.passcode_attempts
GUESSES = 24


@pytest.fixture(scope="module")
def nodes(database_url: str) -> Iterator[tuple[ServerThread, ServerThread]]:
    with secured_node(database_url) as one, secured_node(database_url) as two:
        register_client(database_url)
        yield one, two


async def _guess_all(urls: list[str], passcode: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        return list(
            await asyncio.gather(
                *(
                    http.post(url, json={"recipient": f"guesser {n}", "passcode": passcode})
                    for n, url in enumerate(urls)
                )
            )
        )


def test_concurrent_wrong_passcodes_on_two_servers_spend_exactly_the_lifetime_budget(
    nodes: tuple[ServerThread, ServerThread], database_url: str
) -> None:
    one, two = nodes
    patients = Patients(one, database_url)
    try:
        created = patients(f"pt-{uuid.uuid4().hex[:10]}").post(
            "/share/links", json={"bundle": summary_bundle(), "flag": "P", "passcode": "s3cret"}
        )
    finally:
        patients.close()
    assert created.status_code == 201, created.text
    url = decode(created.json()["shlink"]).url
    path = url.split("/shl/", 1)[1]
    urls = [f"http://127.0.0.1:{(one if n % 2 else two).port}/shl/{path}" for n in range(GUESSES)]

    answers = asyncio.run(_guess_all(urls, "wrong"))

    refused = [a for a in answers if a.status_code == 401]
    assert len(refused) == BUDGET
    assert sorted(a.json()["remainingAttempts"] for a in refused) == list(range(BUDGET))
    assert [a.status_code for a in answers if a.status_code != 401] == [404] * (GUESSES - BUDGET)
    # Exhausted for good: even the right passcode is too late now.
    assert httpx.post(url, json={"recipient": "owner", "passcode": "s3cret"}).status_code == 404
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT attempts_left, (SELECT count(*) FROM shl_access a WHERE a.link_id = l.id)"
            " FROM shl_link l WHERE id = %s",
            (path,),
        ).fetchone()
    assert row == (0, GUESSES + 1)  # every request recorded


def test_the_right_passcode_opens_the_link_and_costs_nothing(
    nodes: tuple[ServerThread, ServerThread], database_url: str
) -> None:
    one, two = nodes
    patients = Patients(one, database_url)
    try:
        created = patients(f"pt-{uuid.uuid4().hex[:10]}").post(
            "/share/links", json={"bundle": summary_bundle(), "flag": "LP", "passcode": "4711"}
        )
    finally:
        patients.close()
    url = decode(created.json()["shlink"]).url
    on_two = f"http://127.0.0.1:{two.port}/shl/{url.split('/shl/', 1)[1]}"
    wrong = httpx.post(url, json={"recipient": "r"})  # no passcode at all is a wrong one
    assert wrong.status_code == 401
    assert wrong.json() == {"remainingAttempts": BUDGET - 1}
    right = httpx.post(on_two, json={"recipient": "r", "passcode": "4711"})
    assert right.status_code == 200
    again = httpx.post(url, json={"recipient": "r", "passcode": "nope"})
    assert again.json() == {"remainingAttempts": BUDGET - 2}
