"""``python -m bench.auth_cpu --database-url URL``: CPU per search request under authorization.

The auth benchmark (bench/auth.py) measures throughput over HTTP; on a machine whose cores
other people's work keeps busy its rounds differ by 2x for the same server, and a slower
server is also charged more of its idle background CPU per request. This measures what the
throughput of a CPU-bound node follows — CPU per request, the app's plus its PostgreSQL
backends' — without sockets, HTTP client or scheduler waits: the ASGI app is called in this
process, one request at a time, for each variant in turn (``rounds`` times, medians
reported). The query mix, tokens and variants are the auth benchmark's:

- ``open``: ``--open``, no token;
- ``patient token`` / ``system token``: the node as it runs (audited);
- ``..., no audit``: auditing switched off (bench/switched.py);
- ``..., no audit, no consent``: also without the consent and label conditions.

The database must hold the data and the Consents (run ``python -m bench --only auth
--reuse-database NAME`` once first, or this writes none and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench import auth, auth_setup, switched
from bench.common import _cpu_of

BASE = "http://bench.invalid/fhir"
Asgi = Callable[..., Any]


def backend_pids(dbname: str) -> list[int]:
    """Client backends of ``dbname`` only (not the server's shared background processes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("postgres:") and f" {dbname} " in cmd and "(" in cmd:
            pids.append(int(entry.name))
    return pids


def _scope(line: tuple[str, str | None]) -> dict[str, Any]:
    path, token = line
    parts = urlsplit(path)
    headers = [(b"host", b"bench.invalid"), (b"accept", b"application/fhir+json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("bench.invalid", 80),
    }


async def _call(app: Asgi, scope: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def _switch(switches: set[str]) -> Callable[[], None]:
    """Apply bench/switched.py's patches for one variant; the returned call undoes them."""
    from healthmesh.api import app as app_module
    from healthmesh.api import auditing

    events = auditing.Auditor.events
    visibility_for = app_module.visibility_for  # type: ignore[attr-defined]
    switched._patch(switches)

    def undo() -> None:
        auditing.Auditor.events = events  # type: ignore[method-assign]
        app_module.visibility_for = visibility_for  # type: ignore[attr-defined]

    return undo


async def measure(
    url: str, lines: dict[str, list[tuple[str, str | None]]], requests: int, rounds: int
) -> dict[str, dict[str, Any]]:
    from healthmesh.api.app import create_app
    from healthmesh.config import Settings

    dbname = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    switches = {
        name: ({"--no-audit"} if "no audit" in name else set())
        | ({"--no-consent"} if "no consent" in name else set())
        for name in lines
    }
    results: dict[str, dict[str, list[float]]] = {
        n: {"app_ms": [], "pg_ms": [], "total_ms": []} for n in lines
    }
    async with AsyncExitStack() as stack:
        apps: dict[str, Any] = {}
        for name in lines:
            # Two connections per variant: seven apps share a server with other people.
            settings = Settings.from_env(url, open=name == "open", base_url=BASE, pool_size=2)
            undo = _switch(switches[name])
            try:
                app = create_app(settings)
            finally:
                undo()
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
        scopes = {name: [_scope(line) for line in ls] for name, ls in lines.items()}
        for round_ in range(rounds):
            for name in lines if round_ % 2 == 0 else list(reversed(lines)):
                undo = _switch(switches[name])
                try:
                    app, todo = apps[name], scopes[name]
                    for i in range(min(50, requests)):  # warm: plans, caches, prepared texts
                        assert await _call(app, todo[i % len(todo)]) == 200
                    before = _cpu_of(backend_pids(dbname))
                    mine = time.process_time()
                    for i in range(requests):
                        status = await _call(app, todo[i % len(todo)])
                        if status != 200:
                            raise RuntimeError(f"{name}: HTTP {status}")
                    app_s = time.process_time() - mine
                    after = _cpu_of(backend_pids(dbname))
                finally:
                    undo()
                pg_s = sum(max(0.0, t - before.get(p, 0.0)) for p, t in after.items())
                r = results[name]
                r["app_ms"].append(1000 * app_s / requests)
                r["pg_ms"].append(1000 * pg_s / requests)
                r["total_ms"].append(1000 * (app_s + pg_s) / requests)
                print(
                    f"  {name:<36} app {r['app_ms'][-1]:.2f} ms + postgres"
                    f" {r['pg_ms'][-1]:.2f} ms = {r['total_ms'][-1]:.2f} ms CPU per request",
                    flush=True,
                )
    return {
        name: {k: statistics.median(v) for k, v in r.items()} | {"runs": r}
        for name, r in results.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_cpu", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=2000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument(
        "--unaudited-only",
        action="store_true",
        help="skip the audited variants (auditing costs more than all the rest, and is slow)",
    )
    args = parser.parse_args(argv)
    url = args.database_url
    patients = auth.load_patients(url, auth.MAX_PATIENTS)
    mix = auth.query_mix(url, patients)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM consent_rule").fetchone()
    print(f"{len(mix)} queries of {len(patients)} patients; consent_rule rows: {row and row[0]}")
    ids = sorted({pid for pid, _ in mix})
    tokens = dict(
        zip(
            ids,
            auth_setup.mint_tokens(
                url, BASE, "bench-patient-app", [("patient/*.rs", p) for p in ids]
            ),
            strict=True,
        )
    )
    (system,) = auth_setup.mint_tokens(url, BASE, "bench-backend", [("system/*.rs", None)])
    lines: dict[str, list[tuple[str, str | None]]] = {"open": [(p, None) for _, p in mix]}
    variants = (
        (auth.NO_AUDIT, auth.NO_CONSENT)
        if args.unaudited_only
        else ("", auth.NO_AUDIT, auth.NO_CONSENT)
    )
    for variant in variants:
        lines["patient token" + variant] = [(path, tokens[pid]) for pid, path in mix]
        lines["system token" + variant] = [(path, system) for _, path in mix]
    figures = asyncio.run(measure(url, lines, args.requests, args.rounds))
    open_ms = figures["open"]["total_ms"]
    print("medians (CPU per request, app + PostgreSQL; ratio = open / variant):")
    for name, f in figures.items():
        print(
            f"  {name:<36} {f['app_ms']:.2f} + {f['pg_ms']:.2f} = {f['total_ms']:.2f} ms"
            f"  ratio {open_ms / f['total_ms']:.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
