"""The audit trail: appends per second, and what auditing adds to a read.

    python -m bench.audit [--database-url URL] [--seconds S] [--connections N]

In a scratch database (``bench_audit``, dropped at the end):

- **append**: AuditEvents recorded one per transaction (what an audited read does) for
  ``--seconds`` on one connection, then on ``--connections`` connections at once (they
  serialise on the chain head), then in batches of 20 (one search over 20 patients);
- **read**: the repository's read by id of one Observation, alone and followed by building
  and recording its AuditEvent (``Touched.of`` + ``interaction_event`` + ``record``), by
  turns; the difference is what auditing adds to a read at the store level (the end-to-end
  ratio over HTTP, auditing on vs off: bench/audit_http.py, ``python -m bench --only audit``);
- **verify**: entries checked per second by ``verify``.

``run(ctx)`` is the same as a Section for ``python -m bench`` (register it in BENCHES).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from psycopg import AsyncConnection
from rich.console import Console
from rich.table import Table

from bench.common import DEFAULT_ADMIN_URL, Context, Databases, Figure, Section
from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit, chain
from healthmesh.store.migrate import migrate
from healthmesh.store.repository import Repository

GRANT = AccessGrant(
    client_id="bench-app",
    scope="patient/*.rs",
    patient="p0",
    fhir_user="Patient/p0",
    purpose_of_use="PATRQT",
)
OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "meta": {"versionId": "1"},
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
    "subject": {"reference": "Patient/p0"},
    "valueQuantity": {"value": 101, "unit": "mg/dL"},
}


def _event(n: int) -> dict[str, Any]:
    touched = [audit.Touched("Observation", f"o{n}", "1", "p0")]
    return audit.interaction_event(GRANT, "read", touched, audit.SUCCESS, address="127.0.0.1")


async def _for(seconds: float, step: Callable[[int], Awaitable[int]]) -> tuple[int, float]:
    """Run ``step`` until ``seconds`` pass; (events recorded, elapsed)."""
    done, n = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += await step(n)
        n += 1
    return done, time.perf_counter() - started


async def _appends(url: str, seconds: float, connections: int) -> dict[str, float]:
    conns = [await AsyncConnection.connect(url, autocommit=True) for _ in range(connections)]
    try:

        async def single(n: int) -> int:
            await chain.record(conns[0], _event(n))
            return 1

        one, t1 = await _for(seconds, single)

        async def worker(conn: AsyncConnection[Any]) -> tuple[int, float]:
            async def step(n: int) -> int:
                await chain.record(conn, _event(n))
                return 1

            return await _for(seconds, step)

        results = await asyncio.gather(*(worker(c) for c in conns))
        many = sum(r[0] for r in results)
        tn = max(r[1] for r in results)

        async def batch(n: int) -> int:
            await chain.record(conns[0], [_event(n * 20 + i) for i in range(20)])
            return 20

        batched, tb = await _for(seconds, batch)
    finally:
        for conn in conns:
            await conn.close()
    return {
        "append_1_conn": one / t1,
        f"append_{connections}_conns": many / tn,
        "append_batch_20": batched / tb,
    }


async def _reads(url: str, seconds: float) -> dict[str, float]:
    repository = Repository(url, min_size=1, max_size=2)
    await repository.open()
    try:
        async with repository.session() as session:
            from healthmesh.interactions import write

            await write.update(session, dict(OBSERVATION), "Observation", "o1")
        plain: list[float] = []
        audited: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            await repository.read_current("Observation", "o1")
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            version = await repository.read_current("Observation", "o1")
            if version is None or version.content is None:
                raise RuntimeError("the benchmark's Observation is gone")
            touched = audit.Touched.of(orjson.loads(version.content))
            event = audit.interaction_event(GRANT, "read", [touched], audit.SUCCESS)
            async with repository.pool.connection() as conn:
                await chain.record(conn, event)
            audited.append(time.perf_counter() - t0)
        build: list[float] = []
        content = orjson.dumps(OBSERVATION).decode()
        for _ in range(2000):
            t0 = time.perf_counter()
            touched = audit.Touched.of(orjson.loads(content))
            audit.interaction_event(GRANT, "read", [touched], audit.SUCCESS)
            build.append(time.perf_counter() - t0)
    finally:
        await repository.close()

    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else 0.0

    return {
        "read_p50_ms": ms(plain, 50),
        "read_p99_ms": ms(plain, 99),
        "audited_read_p50_ms": ms(audited, 50),
        "audited_read_p99_ms": ms(audited, 99),
        "build_event_p50_us": statistics.median(build) * 1e6,
        "reads": float(len(plain)),
    }


async def _verify(url: str) -> dict[str, float]:
    conn = await AsyncConnection.connect(url, autocommit=True)
    try:
        started = time.perf_counter()
        report = await chain.verify(conn)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    if not report.ok:
        raise RuntimeError(f"the benchmark's own chain does not verify: {report.first_bad}")
    return {"verify_entries_per_s": report.entries / elapsed, "entries": float(report.entries)}


def measure(url: str, seconds: float, connections: int) -> dict[str, float]:
    migrate(url)
    figures = asyncio.run(_appends(url, seconds, connections))
    figures |= asyncio.run(_reads(url, seconds))
    figures |= asyncio.run(_verify(url))
    return figures


def run(ctx: Context) -> Section:
    url = ctx.databases.create("audit")
    try:
        found = measure(url, min(ctx.duration, 10.0), max(ctx.concurrency, 2))
    finally:
        ctx.databases.drop(url)
    section = Section(details=found)
    for name, value in found.items():
        unit = "ms" if name.endswith("_ms") else "µs" if name.endswith("_us") else "/s"
        section.figures.append(Figure(bench="audit", name=name, value=value, unit=unit))
    return section


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    databases = Databases(args.database_url)
    url = databases.create("audit")
    try:
        found = measure(url, args.seconds, args.connections)
    finally:
        databases.drop_all()
    table = Table(title="audit trail")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in found.items():
        table.add_row(name, f"{value:,.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
