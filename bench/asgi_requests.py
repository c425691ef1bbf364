"""One kind of request driven through the node's ASGI app in process, no sockets: the
server's own cost per request, for profilers (callgrind, cProfile).

Under callgrind, run it twice with different ``--requests`` and take the difference of the
instruction totals over the difference of the requests: start-up and warm-up cancel out,
and the count does not depend on the machine's load (docs/PERFORMANCE.md, "Search").

    python -m bench.asgi_requests --database-url URL --requests 200 \\
        '/fhir/Patient?identifier=http://hospital.smarthealthit.org|{mrn}'

``{mrn}`` takes each of the database's hospital MRNs in turn; ``--token`` sends
``Authorization: Bearer`` (a server without ``--open``), ``--profile`` prints cProfile's
top functions for the measured requests. ``--canned`` answers the search's statements from
what they returned in the warm-up, without a round trip: the Python alone (the statements
are still composed and bound; a statement not seen in the warm-up goes to the database).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any
from urllib.parse import quote

import psycopg

from healthmesh.api.app import create_app
from healthmesh.config import Settings
from healthmesh.store import repository
from healthmesh.store.statements import bind

MRN = "http://hospital.smarthealthit.org"


def mrns(url: str, limit: int) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT code FROM search_token WHERE res_type = 'Patient' AND param = 'identifier'"
            " AND system = %s ORDER BY code LIMIT %s",
            (MRN, limit),
        ).fetchall()
    return [str(r[0]) for r in rows]


async def _request(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


def can_answers() -> None:
    """Session.fetch answers from a memo of (text, parameters) -> rows once it has them."""
    real = repository.Session.fetch
    memo: dict[tuple[bytes, str], list[tuple[Any, ...]]] = {}

    async def fetch(self: repository.Session, query: Any) -> list[tuple[Any, ...]]:
        text, params = bind(query)
        key = (text, repr(params))
        if key not in memo:
            memo[key] = await real(self, query)
        return memo[key]

    repository.Session.fetch = fetch  # type: ignore[method-assign]


async def drive(args: argparse.Namespace) -> None:
    if args.canned:
        can_answers()
    settings = Settings.from_env(args.database_url, open=args.token is None)
    app = create_app(settings)
    values = mrns(args.database_url, 300)
    # Quoted as httpx quotes a query (the benchmark's client): '|' and ':' as %7C and %3A.
    paths = [args.path.replace("{mrn}", quote(v, safe="")).replace("|", "%7C") for v in values]
    headers = [(b"host", b"127.0.0.1:8080"), (b"accept", b"application/fhir+json")]
    if args.token:
        headers.append((b"authorization", f"Bearer {args.token}".encode()))
    async with app.router.lifespan_context(app):
        for n in range(args.warmup):
            status, body = await _request(app, paths[n % len(paths)], headers)
            if status != 200:
                raise SystemExit(f"{paths[n % len(paths)]}: {status} {body[:300]!r}")
        profile = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profile:
            profile.enable()
        for n in range(args.requests):
            await _request(app, paths[n % len(paths)], headers)
        if profile:
            profile.disable()
        seconds = time.perf_counter() - started
    print(f"{args.requests} requests, {seconds / max(args.requests, 1) * 1e3:.3f} ms each")
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="request path and query; {mrn}: each MRN in turn")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--token", help="an access token (the app then checks it)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--canned", action="store_true", help="no round trip for searches")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(drive(args))


if __name__ == "__main__":
    main()
