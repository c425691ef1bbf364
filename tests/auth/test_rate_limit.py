"""Brute-force limits on the token endpoints: per client id, per address, across processes;
and the purge that keeps the counters (and other short-lived state) small."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from auth_support import with_auth

from healthmesh.auth.server import AuthServer
from healthmesh.auth.settings import AuthSettings
from healthmesh.config import Settings

from conftest import ServerThread, free_port

# One window longer than any test run: counts never reset halfway through a test.
WINDOW = 10**9


@pytest.fixture
def fresh_counters(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE auth_rate_counter")


def _limited(database_url: str, per_client: int, per_address: int) -> ServerThread:
    auth = AuthSettings(
        rate_window=WINDOW, rate_per_client=per_client, rate_per_address=per_address
    )
    return ServerThread(Settings(database_url=database_url, open=True, auth=auth))


def _attempt(base: str, client_id: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": "guess", "client_id": client_id}
    return httpx.post(f"{base}/auth/token", data=form)


@pytest.mark.usefixtures("fresh_counters")
def test_too_many_requests_for_one_client_id_get_429_with_retry_after(database_url: str) -> None:
    with _limited(database_url, per_client=3, per_address=1000) as running:
        target = f"victim-{uuid.uuid4().hex}"
        codes = [_attempt(running.base, target).status_code for _ in range(3)]
        limited = _attempt(running.base, target)
        other = _attempt(running.base, f"other-{uuid.uuid4().hex}")
        introspect = httpx.post(
            f"{running.base}/auth/introspect", data={"token": "x", "client_id": target}
        )
    assert codes == [401, 401, 401]  # unknown client: counted all the same
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"] == "slow_down"
    assert limited.headers["cache-control"] == "no-store"
    assert other.status_code == 401  # another client id is not held back
    assert introspect.status_code == 429  # the same budget covers introspection


@pytest.mark.usefixtures("fresh_counters")
def test_too_many_requests_from_one_address_get_429_whatever_the_client_id(
    database_url: str,
) -> None:
    with _limited(database_url, per_client=1000, per_address=5) as running:
        codes = [_attempt(running.base, f"c-{uuid.uuid4().hex}").status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2


@pytest.fixture
def two_processes(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two `healthmesh serve` processes on one database, each with its own pool and memory."""
    env = {
        **os.environ,
        "HEALTHMESH_AUTH_RATE_WINDOW": str(WINDOW),
        "HEALTHMESH_AUTH_RATE_PER_CLIENT": "4",
        "HEALTHMESH_AUTH_RATE_PER_ADDRESS": "1000",
    }
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "healthmesh",
                "serve",
                "--open",
                "--port",
                str(port),
                "--database-url",
                database_url,
            ],
            env=env,
            stdout=(tmp_path / f"{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            for _ in range(600):
                assert process.poll() is None, (tmp_path / f"{port}.log").read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield [f"http://127.0.0.1:{port}/fhir" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)


@pytest.mark.usefixtures("fresh_counters")
def test_the_limit_holds_across_server_processes(two_processes: list[str]) -> None:
    first, second = two_processes
    target = f"victim-{uuid.uuid4().hex}"
    codes = [_attempt(base, target).status_code for base in (first, second, first, second)]
    assert codes == [401] * 4
    assert _attempt(first, target).status_code == 429
    assert _attempt(second, target).status_code == 429


def test_purge_forgets_expired_state_and_keeps_live_state(database_url: str) -> None:
    live_jti, dead_jti = uuid.uuid4().hex, uuid.uuid4().hex
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO auth_revoked_token VALUES (%s, now() - interval '1 s'),"
            " (%s, now() + interval '1 h')",
            (dead_jti, live_jti),
        )
        conn.execute(
            "INSERT INTO auth_rate_counter VALUES"
            " ('client:old', now() - interval '1 day', now() - interval '23 h', 3)"
        )

    async def body(auth: AuthServer) -> dict[str, int]:
        return await auth.purge()

    purged = with_auth(database_url, body)
    assert purged["auth_revoked_token"] >= 1 and purged["auth_rate_counter"] >= 1
    with psycopg.connect(database_url) as conn:
        kept = {r[0] for r in conn.execute("SELECT jti FROM auth_revoked_token").fetchall()}
        old = conn.execute(
            "SELECT count(*) FROM auth_rate_counter WHERE bucket = 'client:old'"
        ).fetchone()
    assert live_jti in kept and dead_jti not in kept
    assert old == (0,)
