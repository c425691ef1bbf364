"""Sharing benchmark: SMART Health Link creation and manifest resolution (docs/PERFORMANCE.md).

    python -m bench.share [--links N] [--resolves N] [--concurrency C] [--database-url URL]

Starts ``healthmesh serve --open`` (one uvicorn worker) on a scratch database ``bench_share``
(dropped at the end), mints a patient token with the node's own authorization server, then:

1. creates ``--links`` links (each encrypting the bundled summary fixture) at ``--concurrency``;
2. resolves their manifests ``--resolves`` times (plain links, file by location), then the
   same for passcode (P) links, whose scrypt check is the expected extra cost;
3. fetches the located files.

Reports throughput and p50/p95/p99 latency per step; the target is manifest p95 < 50 ms.
Bounded: each step is a fixed number of requests with a 30 s timeout each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from bench.common import DEFAULT_ADMIN_URL, Databases, Service, free_port, healthmesh_argv
from healthmesh.auth.clients import Client
from healthmesh.auth.server import AuthServer
from healthmesh.share.manifest import ManifestRequest, ManifestService
from healthmesh.share.settings import ShareSettings
from healthmesh.store.migrate import migrate

FIXTURE = Path(__file__).resolve().parents[1] / "tests/share/fixtures/summary-bundle.json"
RESULTS = Path(__file__).resolve().parent / "results"
P95_TARGET_MS = 50.0


async def mint_patient_token(url: str, issuer: str, patient: str) -> str:
    pool: Any = AsyncConnectionPool(
        url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    auth = AuthServer(pool)
    try:
        await auth.start()
        await auth.clients.add(
            Client(
                client_id="bench-share",
                name="Sharing benchmark",
                scope="*",
                redirect_uris=("http://127.0.0.1/callback",),
            )
        )
        grant = await auth.grants.create(
            client_id="bench-share",
            kind="cli",
            subject=patient,
            scope="patient/*.rs",
            lifetime=timedelta(hours=1),
            patient=patient,
        )
        issued = await auth.issuer.issue_access_token(grant, issuer=issuer, lifetime=3600)
        return issued.access_token
    finally:
        await auth.close()
        await pool.close()


async def timed(
    count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]
) -> tuple[list[float], float, list[Any]]:
    """Run ``one(i)`` for i < count, ``concurrency`` at a time: latencies (ms), wall s, results."""
    latencies: list[float] = []
    results: list[Any] = [None] * count
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            start = time.perf_counter()
            results[i] = await one(i)
            latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, results


def summary(name: str, latencies: list[float], wall: float) -> dict[str, Any]:
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "step": name,
        "requests": len(latencies),
        "per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(cuts[49], 1),
        "p95_ms": round(cuts[94], 1),
        "p99_ms": round(cuts[98], 1),
    }


async def in_process(
    database_url: str, urls: list[str], resolves: int, concurrency: int
) -> dict[str, Any]:
    """The manifest service called directly (no HTTP, no event loop shared with a server):
    what resolution itself costs in SQL and Python."""
    pool: Any = AsyncConnectionPool(
        database_url,
        min_size=concurrency,
        max_size=concurrency,
        open=False,
        kwargs={"autocommit": True},
    )
    await pool.open(wait=True)
    service = ManifestService(pool, ShareSettings())
    ids = [u.rsplit("/", 1)[1] for u in urls]
    try:

        async def one(i: int) -> None:
            request = ManifestRequest("bench receiver")
            await service.manifest(ids[i % len(ids)], request, lambda t: t)

        lat, wall, _ = await timed(resolves, concurrency, one)
    finally:
        await pool.close()
    return summary("manifest (plain, in-process)", lat, wall)


async def run(
    base: str, token: str, links: int, resolves: int, concurrency: int, database_url: str
) -> list[dict[str, Any]]:
    bundle = json.loads(FIXTURE.read_text())
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency)
    figures = []
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def health(_: int) -> None:
            (await http.get("/health")).raise_for_status()

        # The same HTTP stack without sharing or the database: the floor on this machine now.
        lat, wall, _ = await timed(resolves, concurrency, health)
        figures.append(summary("/health (floor)", lat, wall))
        for flag in ("", "P"):
            extra = {"flag": "P", "passcode": "271828"} if flag else {}

            async def create(_: int, extra: dict[str, Any] = extra) -> str:
                response = await http.post(
                    "/share/links", json={"bundle": bundle, **extra}, headers=headers
                )
                response.raise_for_status()
                return str(response.json()["link"]["url"])

            lat, wall, urls = await timed(links, concurrency, create)
            figures.append(summary(f"create ({flag or 'plain'})", lat, wall))

            async def resolve(i: int, urls: list[str] = urls, extra: dict[str, Any] = extra) -> str:
                body = {
                    "recipient": "bench receiver",
                    **({"passcode": extra["passcode"]} if extra else {}),
                }
                response = await http.post(urls[i % len(urls)], json=body)
                response.raise_for_status()
                return str(response.json()["files"][0]["location"])

            lat, wall, locations = await timed(resolves, concurrency, resolve)
            figures.append(summary(f"manifest ({flag or 'plain'})", lat, wall))
            if not flag:
                figures.append(await in_process(database_url, urls, resolves, concurrency))

                async def fetch(i: int, locations: list[str] = locations) -> None:
                    (await http.get(locations[i])).raise_for_status()

                lat, wall, _ = await timed(resolves, concurrency, fetch)
                figures.append(summary("file by location", lat, wall))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.share")
    parser.add_argument("--links", type=int, default=200)
    parser.add_argument("--resolves", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    databases = Databases(args.database_url)
    try:
        url = databases.create("share")
        migrate(url)
        port = free_port()
        argv_ = healthmesh_argv("serve", "--open", "--port", str(port), "--database-url", url)
        with Service(argv_, port) as service:
            token = asyncio.run(mint_patient_token(url, f"{service.base}/fhir", "bench-patient"))
            figures = asyncio.run(
                run(service.base, token, args.links, args.resolves, args.concurrency, url)
            )
    finally:
        databases.drop_all()
    width = max(len(f["step"]) for f in figures)
    print(f"{'step':<{width}}  requests   req/s    p50    p95    p99 (ms)")
    for f in figures:
        print(
            f"{f['step']:<{width}}  {f['requests']:>8} {f['per_second']:>7} {f['p50_ms']:>6}"
            f" {f['p95_ms']:>6} {f['p99_ms']:>6}"
        )
    plain = next(f for f in figures if f["step"] == "manifest (plain)")
    verdict = "met" if plain["p95_ms"] < P95_TARGET_MS else "NOT met"
    print(f"manifest p95 target < {P95_TARGET_MS:.0f} ms: {verdict}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"share-{stamp}.json"
    out.write_text(json.dumps({"figures": figures, "args": vars(args)}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
