"""The ``healthmesh`` command: serve, demo, load, migrate."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from healthmesh.config import Settings
from healthmesh.store.database import redact, resolve_url

if TYPE_CHECKING:
    from healthmesh.load.loader import LoadReport

app = typer.Typer(
    help="HealthMesh: an open, patient-controlled health data network node.", no_args_is_help=True
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

OPEN_WARNING = (
    "[bold red]WARNING: --open serves the FHIR API WITHOUT AUTHORIZATION.[/]\n"
    "[red]Anyone who can reach this port can read and change every record. "
    "Use it for local experiments with synthetic data only.[/]"
)


def _serve(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    from healthmesh.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # request lines can carry identifiers in query strings: PHI stays out of logs
        workers=workers if workers > 1 else None,
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Serve WITHOUT authorization (local experiments only).")
    ] = False,
) -> None:
    """Serve the FHIR API."""
    if not open_:
        console.print(
            "[red]Authorization (SMART on FHIR) is not built yet, and this server refuses to run "
            "unprotected by default.[/] Start it with --open for a local experiment."
        )
        raise typer.Exit(2)
    console.print(OPEN_WARNING)
    url = resolve_url(database_url, data_dir)
    console.print(f"database: {redact(url)}")
    console.print(f"FHIR API: http://{host}:{port}/fhir")
    _serve(Settings.from_env(url, open=True), host, port, 1)


async def _load(url: str, files: list[Path], workers: int, quiet: bool) -> tuple[LoadReport, float]:
    from healthmesh.load.loader import Loader
    from healthmesh.load.progress import LoadProgress
    from healthmesh.store.repository import Repository

    repository = Repository(url, min_size=1, max_size=workers + 1)
    await repository.open()
    try:
        total = sum(f.stat().st_size for f in files)
        started = time.perf_counter()
        if quiet:
            report = await Loader(repository).load(files, workers=workers)
        else:
            with LoadProgress(total, console) as progress:
                report = await Loader(repository, progress=progress).load(files, workers=workers)
        return report, time.perf_counter() - started
    finally:
        await repository.close()


def _print_report(report: LoadReport, seconds: float) -> None:
    table = Table(
        title=f"{report.resources:,} resources in {seconds:.1f} s ({report.resources / max(seconds, 1e-9):,.0f}/s)"
    )
    for column in ("type", "created", "updated", "unchanged"):
        table.add_column(column, justify="left" if column == "type" else "right")
    types = sorted(set(report.created) | set(report.updated) | set(report.unchanged))
    for name in sorted(
        types, key=lambda t: -(report.created[t] + report.updated[t] + report.unchanged[t])
    ):
        table.add_row(
            name,
            f"{report.created[name]:,}",
            f"{report.updated[name]:,}",
            f"{report.unchanged[name]:,}",
        )
    console.print(table)
    if report.errors:
        errors = Table(title=f"{len(report.errors)} errors", title_style="bold red")
        for column in ("file", "where", "reason"):
            errors.add_column(column)
        for e in report.errors[:50]:
            errors.add_row(e.file, e.entry, e.reason)
        console.print(errors)
        if len(report.errors) > 50:
            console.print(f"... and {len(report.errors) - 50} more")


@app.command()
def load(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Bundle (.json) and NDJSON (.ndjson, .ndjson.gz) files or folders."),
    ],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(help="Files loaded side by side.")] = 2,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Load FHIR Bundles and NDJSON; loading the same input twice leaves the same data."""
    from healthmesh.load.loader import find_inputs
    from healthmesh.store.migrate import migrate

    try:
        files = find_inputs(paths)
    except FileNotFoundError as exc:
        console.print(f"[red]no such file or folder: {exc}[/]")
        raise typer.Exit(2) from None
    url = resolve_url(database_url, data_dir)
    migrate(url)
    report, seconds = asyncio.run(_load(url, files, workers, quiet))
    _print_report(report, seconds)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve a demo node on the embedded database, loading a bundled sample when it is empty."""
    from importlib import resources

    from healthmesh.store.migrate import migrate

    url = resolve_url(database_url, data_dir)
    migrate(url)
    if _is_empty(url):
        sample = resources.files("healthmesh.load").joinpath("sample")
        files = [
            Path(str(sample.joinpath(n.name)))
            for n in sample.iterdir()
            if n.name.endswith(".ndjson.gz")
        ]
        console.print("[bold]Empty store: loading the bundled Synthea sample[/]")
        report, seconds = asyncio.run(_load(url, sorted(files), 2, quiet=False))
        _print_report(report, seconds)
    console.print(OPEN_WARNING)
    base = f"http://{host}:{port}/fhir"
    console.print(f"\n[bold green]HealthMesh demo[/] on {redact(url)}")
    console.print(f"  FHIR base        {base}")
    console.print(f"  capabilities     {base}/metadata")
    console.print(f"  patients         {base}/Patient")
    console.print(f"  recent changes   {base}/_history")
    console.print(f"  health           http://{host}:{port}/health\n")
    _serve(Settings.from_env(url, open=True), host, port, 1)


def _is_empty(url: str) -> bool:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT NOT EXISTS (SELECT 1 FROM resource)").fetchone() == (True,)


@app.command()
def stop(data_dir: DataDir = None) -> None:
    """Stop the embedded PostgreSQL (it keeps running between commands for fast starts)."""
    from healthmesh.store.database import DEFAULT_DATA_DIR, stop_embedded

    stopped = stop_embedded(data_dir or DEFAULT_DATA_DIR)
    console.print(
        "embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL was running"
    )


@app.command("migrate")
def migrate_command(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations and exit."""
    from healthmesh.store.migrate import migrate

    applied = migrate(resolve_url(database_url, data_dir))
    console.print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")


from healthmesh.audit_cli import audit_app  # noqa: E402 - the sub-app, after the commands

app.add_typer(audit_app, name="audit")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
