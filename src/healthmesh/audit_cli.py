"""``healthmesh audit …``: verify the chain, purge by retention, scan for and report breaches."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from rich.console import Console
from rich.table import Table

from healthmesh.store.database import resolve_url

T = TypeVar("T")
audit_app = typer.Typer(
    help="The audit trail: verify it, purge it by retention, look for breaches.",
    no_args_is_help=True,
)
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded PostgreSQL data directory (default ./.healthmesh)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="HEALTHMESH_DATABASE_URL",
        help="Use this PostgreSQL (>= 15) instead of the embedded one.",
    ),
]
Node = Annotated[str, typer.Option(help="This node's name in the events it records.")]


def _run(
    database_url: str | None,
    data_dir: Path | None,
    body: Callable[[AsyncConnection[TupleRow]], Awaitable[T]],
) -> T:
    from healthmesh.store.migrate import migrate

    url = resolve_url(database_url, data_dir)
    migrate(url)

    async def go() -> T:
        conn = await AsyncConnection.connect(url, autocommit=True)
        try:
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def _when(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command()
def verify(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    print_keys: Annotated[
        bool, typer.Option("--print-keys", help="Print the checkpoint keys (JWKS) to pin.")
    ] = False,
) -> None:
    """Check the hash chain, the stored events and the signed checkpoints; exit 1 when any
    entry was edited, deleted, inserted or reordered, naming the first bad one."""
    from healthmesh.privacy.chain import Report
    from healthmesh.privacy.chain import verify as check
    from healthmesh.store import audit_store

    async def body(conn: AsyncConnection[TupleRow]) -> tuple[Report, dict[str, Any]]:
        return await check(conn), await audit_store.public_keys(conn)

    report, keys = _run(database_url, data_dir, body)
    if print_keys:
        sys.stdout.write(json.dumps({"keys": list(keys.values())}, indent=2) + "\n")
    span = f"{report.first_seq}–{report.last_seq}" if report.entries else "empty"
    console.print(f"{report.entries:,} entries ({span}), {report.checkpoints} signed checkpoints")
    first = report.first_bad
    if first is None:
        console.print("[green]audit trail intact[/]")
        return
    console.print(f"[bold red]first bad: {first}[/]")
    for problem in report.problems:
        if problem is not first:
            console.print(f"[red]also: {problem}[/]")
    raise typer.Exit(1)


@audit_app.command()
def checkpoint(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Sign the chain head now (the chain also signs one every 1000 entries): run it from
    cron so that a truncated tail is caught however quiet the node is."""
    from healthmesh.privacy.chain import checkpoint as sign

    seq = _run(database_url, data_dir, sign)
    console.print(f"signed the head at entry {seq}" if seq else "the audit trail is empty")


@audit_app.command()
def purge(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            help="Keep this many days (default HEALTHMESH_AUDIT_RETENTION_DAYS, else 7 years)."
        ),
    ] = None,
    node: Node = "healthmesh",
) -> None:
    """Delete audit entries older than the retention period; the chain restarts from a signed
    purge checkpoint, and the purge is itself recorded."""
    from healthmesh.privacy.retention import Purged, retention_from_env
    from healthmesh.privacy.retention import purge as run_purge

    keep = timedelta(days=retention_days) if retention_days else retention_from_env()

    async def body(conn: AsyncConnection[TupleRow]) -> Purged:
        return await run_purge(conn, retention=keep, node=node)

    done = _run(database_url, data_dir, body)
    if not done.removed:
        console.print(f"nothing recorded before {done.cutoff:%Y-%m-%d}")
        return
    console.print(
        f"removed {done.removed:,} entries ({done.first}–{done.last}) recorded before"
        f" {done.cutoff:%Y-%m-%d}"
    )


@audit_app.command()
def scan(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    webhook: Annotated[
        str | None,
        typer.Option(envvar="HEALTHMESH_AUDIT_WEBHOOK", help="POST each new alert (JSON) here."),
    ] = None,
    node: Node = "healthmesh",
) -> None:
    """Run the breach detectors over the last hour; record, log and post new alerts."""
    from healthmesh.privacy.breach import Alert
    from healthmesh.privacy.breach import scan as run_scan

    async def body(conn: AsyncConnection[TupleRow]) -> list[Alert]:
        return await run_scan(conn, webhook=webhook, node=node)

    raised = _run(database_url, data_dir, body)
    for alert in raised:
        console.print(
            f"[red]alert {alert.detector}[/] {alert.subject}: {alert.count} {alert.detail}"
        )
    console.print(f"{len(raised)} new alerts")


@audit_app.command("breach-report")
def breach_report(
    client: Annotated[str, typer.Option("--client", help="The client_id concerned.")],
    since: Annotated[str, typer.Option("--since", help="From (ISO 8601).")],
    until: Annotated[str | None, typer.Option("--until", help="Until (ISO 8601; now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The patients whose data a client was given, and which kinds of data: what a breach
    notification needs (HIPAA §164.404)."""
    from healthmesh.privacy.breach import Exposure
    from healthmesh.privacy.breach import breach_report as report_for

    start, end = _when(since), _when(until) if until else None

    async def body(conn: AsyncConnection[TupleRow]) -> list[Exposure]:
        return await report_for(conn, client, start, end)

    exposures = _run(database_url, data_dir, body)
    if as_json:
        document = {
            "client": client,
            "since": start.isoformat(),
            "until": end.isoformat() if end else None,
            "patients": [e.as_json() for e in exposures],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    table = Table(title=f"{len(exposures)} patients whose data {client} was given")
    for column in ("patient", "events", "first", "last", "resource types", "data categories"):
        table.add_column(column, justify="right" if column == "events" else "left")
    for e in exposures:
        table.add_row(
            f"Patient/{e.patient}",
            str(e.events),
            f"{e.first:%Y-%m-%d %H:%M}",
            f"{e.last:%Y-%m-%d %H:%M}",
            ", ".join(e.types),
            ", ".join(e.categories),
        )
    Console().print(table)
