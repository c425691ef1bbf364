"""The ``healthmesh`` command: serve, demo, load, migrate, clients, token, keys, export."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from healthmesh.config import Settings
from healthmesh.store.database import redact, resolve_url

if TYPE_CHECKING:
    from healthmesh.auth.identity.test_idp import DemoAccount
    from healthmesh.auth.server import AuthServer
    from healthmesh.load.loader import LoadReport

T = TypeVar("T")

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

    from healthmesh.api.app import AUDIT_OFF_WARNING, create_app

    if not settings.audit:
        console.print(f"[bold red]WARNING: {AUDIT_OFF_WARNING}[/]")
    _check_key_sealing()
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
    test_idp: Annotated[
        bool,
        typer.Option("--test-idp", help="Also serve the TEST identity provider at /idp."),
    ] = False,
) -> None:
    """Serve the FHIR API; every request needs a SMART access token unless --open."""
    url = resolve_url(database_url, data_dir)
    console.print(f"database: {redact(url)}")
    _print_access(host, port, open_)
    if test_idp:
        _check_test_idp_allowed()
        console.print(f"TEST identity provider (synthetic people only): http://{host}:{port}/idp")
    _serve(Settings.from_env(url, open=open_, test_identity_provider=test_idp), host, port, 1)


def _print_access(host: str, port: int, open_: bool) -> None:
    base = f"http://{host}:{port}/fhir"
    console.print(f"FHIR API: {base}")
    if open_:
        console.print(OPEN_WARNING)
    else:
        console.print(
            "SMART on FHIR authorization: every request needs an access token"
            f" (discovery: {base}/.well-known/smart-configuration)"
        )


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
    workers: Annotated[
        int, typer.Option(help="Worker processes preparing resources (two connections write).")
    ] = 2,
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
    open_: Annotated[
        bool, typer.Option("--open", help="Serve WITHOUT authorization (local experiments only).")
    ] = False,
) -> None:
    """Serve a demo node on the embedded database, loading a bundled sample when it is empty.

    Authorization is on, as in production: the TEST identity provider logs in the sample's
    synthetic people, and a demo client lets scripts mint tokens with `healthmesh token`."""
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
    base = f"http://{host}:{port}/fhir"
    if not open_:
        _ensure_demo_client(
            url, f"http://{host}:{port}/demo/callback", f"http://{host}:{port}/share"
        )
    console.print(f"\n[bold green]HealthMesh demo[/] on {redact(url)}")
    console.print(f"  FHIR base        {base}")
    console.print(f"  capabilities     {base}/metadata")
    console.print(f"  patients         {base}/Patient")
    console.print(f"  recent changes   {base}/_history")
    console.print(f"  health           http://{host}:{port}/health")
    test_idp = not _is_production()
    if test_idp:
        from healthmesh.auth.identity.test_idp import demo_accounts_sync

        console.print(f"  TEST identity    http://{host}:{port}/idp  (synthetic people only)")
        if not open_:
            console.print(
                f"  share my record  http://{host}:{port}/share  (sign in as one of them)"
            )
        _print_accounts(demo_accounts_sync(url, 3), title="A few test identity logins")
    if open_:
        console.print(OPEN_WARNING)
    else:
        data = f" --data-dir {data_dir}" if data_dir else ""
        console.print(
            f"  SMART discovery  {base}/.well-known/smart-configuration\n"
            "  every request needs an access token; for scripts:\n"
            f"    TOKEN=$(healthmesh token --client {DEMO_CLIENT} --scope 'system/*.rs'"
            f" --base-url {base}{data})\n"
            f'    curl -H "Authorization: Bearer $TOKEN" {base}/Patient'
        )
    console.print()
    _serve(Settings.from_env(url, open=open_, test_identity_provider=test_idp), host, port, 1)


DEMO_CLIENT = "healthmesh-demo"


def _ensure_demo_client(url: str, redirect_uri: str, share_page: str) -> None:
    """The demo's own client, for `healthmesh token`, trying the code flow by hand, and the
    patient's sharing page (``share_page``, its redirect URI: docs/sharing.md)."""
    import psycopg

    from healthmesh.auth.clients import Client

    async def body(auth: AuthServer) -> None:
        if await auth.clients.get(DEMO_CLIENT) is None:
            await auth.clients.add(
                Client(
                    client_id=DEMO_CLIENT,
                    name="HealthMesh demo (scripts and browser)",
                    redirect_uris=(redirect_uri, share_page),
                    scope="system/*.rs patient/*.rs user/*.rs openid fhirUser launch/patient"
                    " offline_access",
                )
            )

    _with_auth(url, body)
    with psycopg.connect(url) as conn:  # a demo client from before the sharing page
        conn.execute(
            "UPDATE auth_client SET redirect_uris = array_append(redirect_uris, %s)"
            " WHERE client_id = %s AND NOT (%s = ANY (redirect_uris))",
            (share_page, DEMO_CLIENT, share_page),
        )


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


@app.command()
def relabel(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply the security-label rules to every stored resource (docs/privacy.md)."""
    from rich.progress import Progress

    from healthmesh.interactions.relabel import relabel as run_relabel
    from healthmesh.store.migrate import migrate
    from healthmesh.store.repository import Repository

    url = resolve_url(database_url, data_dir)
    migrate(url)

    async def run() -> int:
        repository = Repository(url, min_size=1, max_size=2)
        await repository.open()
        try:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("labelling", total=None)

                def step(seen: int, changed: int) -> None:
                    bar.update(task, completed=seen, description=f"labelling ({changed:,} changed)")

                return await run_relabel(repository, progress=step)
        finally:
            await repository.close()

    changed = asyncio.run(run())
    console.print(f"{changed:,} resources newly labelled")


clients_app = typer.Typer(help="Registered OAuth clients (SMART apps, backend services).")
app.add_typer(clients_app, name="clients")
keys_app = typer.Typer(
    help="The node's signing keys: token keys (rotate), and all private keys at rest (reseal)."
)
app.add_typer(keys_app, name="keys")
BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar="HEALTHMESH_BASE_URL",
        help="The FHIR base URL the server answers on: the tokens' iss and aud.",
    ),
]


def _with_auth(url: str, body: Callable[[AuthServer], Awaitable[T]]) -> T:
    """Run ``body`` against the authorization server's stores, straight on the database."""
    from healthmesh.auth.server import AuthServer
    from healthmesh.store.migrate import migrate
    from healthmesh.store.repository import Repository

    migrate(url)

    async def run() -> T:
        repository = Repository(url, min_size=1, max_size=2)
        await repository.open()
        auth = AuthServer(repository.pool, Settings.from_env(url).auth)
        try:
            await auth.start()
            return await body(auth)
        finally:
            await auth.close()
            await repository.close()

    return asyncio.run(run())


@clients_app.command("add")
def clients_add(
    name: Annotated[str, typer.Option(help="Shown to patients on the consent page.")],
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Default: a random one.")
    ] = None,
    jwks_file: Annotated[
        Path | None,
        typer.Option("--jwks-file", help="The client's public JWKS: makes it confidential."),
    ] = None,
    jwks_uri: Annotated[
        str | None,
        typer.Option("--jwks-uri", help="Where the client publishes its JWKS (confidential)."),
    ] = None,
    redirect_uri: Annotated[
        list[str] | None, typer.Option("--redirect-uri", help="Repeatable.")
    ] = None,
    scope: Annotated[str, typer.Option(help="The scopes it may be granted.")] = "",
    grant_type: Annotated[
        list[str] | None,
        typer.Option(
            "--grant-type",
            help="Repeatable. Default: client_credentials for clients with keys, else "
            "authorization_code and refresh_token.",
        ),
    ] = None,
    software_id: Annotated[str | None, typer.Option("--software-id")] = None,
    organization_id: Annotated[str | None, typer.Option("--organization-id")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a client; prints its client_id."""
    import json

    from healthmesh.auth.clients import Client, ClientError, new_client_id

    jwks = json.loads(jwks_file.read_text()) if jwks_file else None
    confidential = jwks is not None or jwks_uri is not None
    default_grants = (
        ("client_credentials",) if confidential else ("authorization_code", "refresh_token")
    )
    client = Client(
        client_id=client_id or new_client_id(),
        name=name,
        token_endpoint_auth_method="private_key_jwt" if confidential else "none",
        redirect_uris=tuple(redirect_uri or ()),
        jwks=jwks,
        jwks_uri=jwks_uri,
        scope=scope,
        grant_types=tuple(grant_type or default_grants),
        software_id=software_id,
        organization_id=organization_id,
    )

    async def body(auth: AuthServer) -> None:
        await auth.clients.add(client)

    try:
        _with_auth(resolve_url(database_url, data_dir), body)
    except ClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    print(client.client_id)  # noqa: T201 (the output scripts read)


@clients_app.command("list")
def clients_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List registered clients: id, name, auth method, grant types, scope, state."""
    from healthmesh.auth.clients import Client

    async def body(auth: AuthServer) -> list[Client]:
        return await auth.clients.list()

    # One tab-separated line per client: readable, and for scripts (cut -f1).
    for c in _with_auth(resolve_url(database_url, data_dir), body):
        fields = (
            c.client_id,
            c.name,
            c.token_endpoint_auth_method,
            ",".join(c.grant_types),
            c.scope,
            "disabled" if c.disabled else "enabled",
        )
        print("\t".join(fields))  # noqa: T201


@clients_app.command("disable")
def clients_disable(
    client_id: Annotated[str, typer.Argument()],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Disable a client: it gets no more tokens, and its live tokens stop working."""

    async def body(auth: AuthServer) -> bool:
        return await auth.clients.set_disabled(client_id)

    if not _with_auth(resolve_url(database_url, data_dir), body):
        console.print(f"[red]no client {client_id}[/]")
        raise typer.Exit(1)
    console.print(f"disabled {client_id}")


@app.command()
def token(
    client: Annotated[str, typer.Option("--client", help="A registered client_id.")],
    scope: Annotated[str, typer.Option(help="Within the client's allowed scopes.")],
    patient: Annotated[str | None, typer.Option(help="Patient context (patient/ scopes).")] = None,
    lifetime: Annotated[int, typer.Option(help="Seconds, at most 3600.")] = 3600,
    base_url: BaseUrl = "http://127.0.0.1:8080/fhir",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Mint an access token for scripts, straight from the database; prints only the token."""
    from datetime import timedelta

    from healthmesh.auth.scope_sets import not_covered

    async def body(auth: AuthServer) -> str:
        found = await auth.clients.get(client)
        if found is None or found.disabled:
            raise ValueError(f"no enabled client {client}")
        extra = not_covered(found.scope, scope)
        if extra:
            raise ValueError(f"not allowed for this client: {' '.join(extra)}")
        if not 0 < lifetime <= 3600:
            raise ValueError("--lifetime must be 1..3600 seconds")
        grant = await auth.grants.create(
            client_id=found.client_id,
            kind="cli",
            scope=scope,
            lifetime=timedelta(seconds=lifetime),
            patient=patient,
            organization=found.organization_id,
        )
        issued = await auth.issuer.issue_access_token(
            grant, issuer=base_url.rstrip("/"), lifetime=lifetime
        )
        return issued.access_token

    try:
        minted = _with_auth(resolve_url(database_url, data_dir), body)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    print(minted)  # noqa: T201 (only the token, for $(healthmesh token ...))


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Make a new signing key active; the old one stays published until its tokens expire."""

    async def body(auth: AuthServer) -> str:
        return await auth.keys.rotate()

    console.print(f"active signing key: {_with_auth(resolve_url(database_url, data_dir), body)}")


@keys_app.command("reseal")
def keys_reseal(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Change the key-encryption key: seal every private key (token, SHC issuer, audit
    checkpoint) with HEALTHMESH_KEY_ENCRYPTION_KEY, opening them with ..._OLD."""
    import psycopg

    from healthmesh.store.key_sealing import KeySealingError, reseal_with_new_passphrase

    url = resolve_url(database_url, data_dir)

    async def body() -> int:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await reseal_with_new_passphrase(conn)

    try:
        changed = asyncio.run(body())
    except KeySealingError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    console.print(f"sealed {changed} private keys with the new key-encryption key")


idp_app = typer.Typer(help="The TEST identity provider (synthetic people only).")
app.add_typer(idp_app, name="idp")


def _is_production() -> bool:
    from healthmesh.auth.identity.test_idp.guard import PRODUCTION_VALUES

    return os.environ.get("HEALTHMESH_ENV", "").strip().lower() in PRODUCTION_VALUES


def _check_key_sealing() -> None:
    """A production node seals its private keys (store/key_sealing.py): refuse to start
    without the key-encryption key, or with an unusable one."""
    from healthmesh.store.key_sealing import ENV, ENV_FILE, KeySealingError, passphrase

    try:
        sealed = passphrase() is not None
    except KeySealingError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    if not sealed and _is_production():
        console.print(
            f"[red]HEALTHMESH_ENV=production needs {ENV} (or {ENV_FILE}): the private signing"
            " keys must not be stored unencrypted.[/]"
        )
        raise typer.Exit(2)


def _check_test_idp_allowed() -> None:
    if _is_production():
        console.print(
            "[red]The TEST identity provider never runs with HEALTHMESH_ENV=production.[/]"
        )
        raise typer.Exit(2)


def _print_accounts(accounts: list[DemoAccount], *, title: str) -> None:
    table = Table(title=f"{title} — TEST IDENTITY SERVICE, synthetic people only")
    for column in ("username", "password", "TOTP secret", "code now", "name", "Patient"):
        table.add_column(column, overflow="fold")  # credentials are never cut short
    for a in accounts:
        table.add_row(
            a.username, a.password, a.totp_secret, a.current_code(), a.display_name, a.patient_id
        )
    out = Console()
    if not out.is_terminal:
        out = Console(width=200)  # piped or logged: keep each account on one line
    out.print(table)


@idp_app.command("accounts")
def idp_accounts(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    limit: Annotated[
        int | None, typer.Option(help="Create at most this many new accounts.")
    ] = None,
    patient: Annotated[
        list[str] | None, typer.Option("--patient", help="Only this Patient id (repeatable).")
    ] = None,
) -> None:
    """Provision a test login for each Patient in the store and print them."""
    from healthmesh.auth.identity.test_idp import provision_accounts_sync
    from healthmesh.store.migrate import migrate

    _check_test_idp_allowed()
    url = resolve_url(database_url, data_dir)
    migrate(url)
    accounts = provision_accounts_sync(url, patient_ids=patient or None, limit=limit)
    _print_accounts(accounts, title=f"{len(accounts)} test identity logins")


from healthmesh.audit_cli import audit_app  # noqa: E402 - the sub-app, after the commands

app.add_typer(audit_app, name="audit")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


@app.command("launch")
def launch_command(
    patient: Annotated[str, typer.Option("--patient", help="The Patient id the launch carries.")],
    lifetime: Annotated[int, typer.Option(help="Seconds the launch id stays usable.")] = 3600,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Mint an EHR launch id (SMART `launch` parameter) for a Patient; prints only the id."""
    from healthmesh.auth.code_flow import mint_launch
    from healthmesh.store.authorizations import AuthorizationStore
    from healthmesh.store.migrate import migrate
    from healthmesh.store.repository import Repository

    url = resolve_url(database_url, data_dir)
    migrate(url)

    async def run() -> str | None:
        repository = Repository(url, min_size=1, max_size=2)
        await repository.open()
        try:
            found = await repository.read_current("Patient", patient)
            if found is None or found.deleted:
                return None
            store = AuthorizationStore(repository.pool)
            return await mint_launch(store, patient, issued_by="cli", lifetime=lifetime)
        finally:
            await repository.close()

    launch = asyncio.run(run())
    if launch is None:
        console.print(f"[red]Patient/{patient} is not in the store[/]")
        raise typer.Exit(2)
    print(launch)  # noqa: T201 (the output scripts read)


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option(help="Folder the NDJSON files are written to.")],
    url: Annotated[str, typer.Option(help="The FHIR base URL.")] = "http://127.0.0.1:8080/fhir",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="HEALTHMESH_TOKEN", help="Bearer token (e.g. from `healthmesh token`)."
        ),
    ] = None,
    type_: Annotated[str | None, typer.Option("--type", help="_type: Patient,Observation")] = None,
    since: Annotated[str | None, typer.Option(help="_since: an instant")] = None,
    type_filter: Annotated[
        list[str] | None, typer.Option("--type-filter", help="_typeFilter (repeatable)")
    ] = None,
    group: Annotated[str | None, typer.Option(help="Export this Group's members.")] = None,
    patients: Annotated[bool, typer.Option(help="Patient-level export.")] = False,
) -> None:
    """Run a FHIR Bulk Data export against a server and download its files (docs/export.md)."""
    import httpx

    from healthmesh.export.client import ExportFailed, run_export

    path = f"/Group/{group}/$export" if group else "/Patient/$export" if patients else "/$export"
    params = [("_type", type_)] if type_ else []
    params += [("_since", since)] if since else []
    params += [("_typeFilter", f) for f in type_filter or []]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with (
        httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120) as client,
        console.status("starting the export") as status,
    ):
        try:
            manifest, files = run_export(
                client, path=path, params=params, out=out, progress=status.update
            )
        except (ExportFailed, httpx.HTTPError) as failed:
            console.print(f"[red]export failed: {failed}[/]")
            raise typer.Exit(1) from None
    console.print(f"transactionTime {manifest['transactionTime']}: {len(files)} files in {out}")
    for f in files:
        console.print(f"  {f.path.name}: {f.count} {f.type}")
