"""Bulk export throughput beside a raw ``COPY (SELECT …) TO STDOUT`` of the same rows.

    python -m bench.export [--resources 50000] [--database-url URL] [--rounds 3]

Loads the bundled sample multiplied to ``--resources`` into a scratch database
(``bench_export_*``, dropped at the end), then, in the same run and alternating rounds:

- ``COPY raw``: ``COPY (SELECT content FROM resource WHERE NOT deleted) TO STDOUT`` — the
  floor: PostgreSQL handing over the bytes, nothing else;
- ``COPY policy``: the export's own per-type statements (export/query.py) with a backend's
  ``system/*.rs`` grant (scopes, Consent and labels compiled in), through COPY;
- ``export open`` / ``export system``: the export job itself (export/runner.py: snapshot,
  server-side cursors, NDJSON chunks written to export_chunk), without and with that grant;
- ``download``: reading a finished job's files back, chunk by chunk;
- ``audit``: the AuditEvents of downloading one file (one per patient in it), as a rate.

Ratios are against ``COPY raw`` of the same round; the machine is shared, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from bench.common import DEFAULT_ADMIN_URL, BenchError, Databases, healthmesh_argv, run_measured
from bench.multiply import multiply
from healthmesh.auth.grant import AccessGrant
from healthmesh.export import jobs
from healthmesh.export.audit_events import download_events
from healthmesh.export.params import ExportRequest
from healthmesh.export.query import EXISTING_TYPES, export_types, type_query
from healthmesh.export.runner import ExportRunner
from healthmesh.export.settings import ExportSettings
from healthmesh.privacy import chain
from healthmesh.store.migrate import migrate
from healthmesh.store.repository import Repository

GRANT = AccessGrant(
    client_id="bench-backend",
    scope="system/*.rs",
    organization="org-bench",
    purpose_of_use="TREAT",
)


def copy_raw(url: str) -> tuple[int, int]:
    """(rows, bytes) of COPY of every live row's content."""
    rows = size = 0
    statement = "COPY (SELECT content FROM resource WHERE NOT deleted) TO STDOUT"
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
        for block in copy:
            size += len(block)
            rows += bytes(block).count(b"\n")
    return rows, size


def copy_policy(url: str, runner: ExportRunner) -> tuple[int, int]:
    """(rows, bytes) of COPY of the export's own statements under the backend grant."""
    request = ExportRequest(level="system")
    visibility = runner.visibility(GRANT)
    rows = size = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        existing = [r[0] for r in conn.execute(EXISTING_TYPES.as_string(conn)).fetchall()]
        types, _ = export_types(request, visibility, existing)
        for res_type in types:
            query = type_query(request, res_type, visibility=visibility, filters=[], members=None)
            statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
            with cur.copy(statement) as copy:
                for block in copy:
                    size += len(block)
                    rows += bytes(block).count(b"\n")
    return rows, size


async def export_job(url: str, runner: ExportRunner, grant: AccessGrant | None) -> tuple[str, int]:
    """Run one system export to completion in this process; (job id, resources)."""
    async with runner.pool.connection() as conn:
        job_id = await jobs.create(
            conn,
            owner=jobs.owner_of(grant),
            grant=jobs.grant_facts(grant),
            request="bench",
            params=ExportRequest(level="system").to_json(),
            max_active=1000,
        )
        job = await jobs.claim(conn, "bench", stale_after=3600)
        assert job is not None
        assert job.id == job_id
    await runner.run(job, "bench")
    async with runner.pool.connection() as conn:
        files = await jobs.files(conn, job_id)
    return job_id, sum(f.count for f in files if f.kind == "output")


async def download_all(runner: ExportRunner, job_id: str) -> int:
    size = 0
    async with runner.pool.connection() as conn:
        for f in await jobs.files(conn, job_id):
            async for chunk in jobs.chunks(conn, job_id, f.n):
                size += len(chunk)
    return size


async def audit_rate(runner: ExportRunner, job_id: str) -> tuple[int, float]:
    """(patients, seconds) of auditing the download of the job's biggest-patient file."""
    async with runner.pool.connection() as conn:
        files = await jobs.files(conn, job_id)
        f = max(files, key=lambda f: len(f.patients))
        start = time.perf_counter()
        await chain.record(conn, download_events(GRANT, job_id, f, address=None, node="bench"))
        return len(f.patients), time.perf_counter() - start


async def measure(url: str, rounds: int) -> dict[str, list[float]]:
    repository = Repository(url, min_size=2, max_size=6)
    await repository.open()
    runner = ExportRunner(repository.pool, ExportSettings())
    rates: dict[str, list[float]] = {}

    def note(name: str, rows: int, seconds: float) -> None:
        rates.setdefault(name, []).append(rows / seconds)

    try:
        for _ in range(rounds):
            start = time.perf_counter()
            raw_rows, _ = await asyncio.to_thread(copy_raw, url)
            note("COPY raw", raw_rows, time.perf_counter() - start)
            start = time.perf_counter()
            policy_rows, _ = await asyncio.to_thread(copy_policy, url, runner)
            note("COPY policy", policy_rows, time.perf_counter() - start)
            start = time.perf_counter()
            _job_id, count = await export_job(url, runner, None)
            note("export open", count, time.perf_counter() - start)
            start = time.perf_counter()
            system_job, system_count = await export_job(url, runner, GRANT)
            note("export system", system_count, time.perf_counter() - start)
            start = time.perf_counter()
            await download_all(runner, system_job)
            note("download", system_count, time.perf_counter() - start)
            patients, seconds = await audit_rate(runner, system_job)
            note("audit (events/s)", patients + 1, seconds)
            print(
                f"round: raw {raw_rows} rows, policy {policy_rows}, open {count},"
                f" system {system_count}; audit file {patients} patients"
            )
            async with repository.pool.connection() as conn:
                await conn.execute("DELETE FROM export_job")
    finally:
        await repository.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export")
    parser.add_argument("--resources", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    databases = Databases(args.database_url)
    try:
        url = databases.create(f"export_{uuid.uuid4().hex[:8]}")
        migrate(url)
        with tempfile.TemporaryDirectory() as work:
            multiply(Path(work), resources_wanted=args.resources)
            load = run_measured(healthmesh_argv("load", "--quiet", "--database-url", url, work))
            if load.returncode != 0:
                raise BenchError(f"healthmesh load failed:\n{load.output[-3000:]}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        rates = asyncio.run(measure(url, args.rounds))
        raw = statistics.median(rates["COPY raw"])
        policy = statistics.median(rates["COPY policy"])
        print(
            f"\n{'step':18} {'median /s':>12} {'vs COPY raw':>12} {'vs COPY policy':>15}"
            f"   (rounds: {args.rounds})"
        )
        for name, values in rates.items():
            median = statistics.median(values)
            if "audit" in name:
                print(f"{name:18} {median:12,.0f}")
                continue
            print(f"{name:18} {median:12,.0f} {median / raw:12.2f} {median / policy:15.2f}")
        return 0
    finally:
        databases.drop_all()


if __name__ == "__main__":
    sys.exit(main())
