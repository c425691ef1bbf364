"""``Patient/[id]/$summary`` and ``$shared-bundle`` latency for the largest Synthea patients.

    python -m bench.summary [--requests N] [--copies K] [--database-url URL]

Loads, into a scratch database ``bench_summary``: the largest Synthea patient as it is, and a
"scaled" patient made of that patient's clinical resources ``K`` times over (fresh ids, the
same Patient, practitioners and organisations), so the record holds well over 1,000
resources. Then serves ``healthmesh serve --open`` and asks each ``N`` times, one request at a
time after a warm-up, reporting p50 / p95 / max wall time per request as the client sees it
(HTTP included). Target (docs/PERFORMANCE.md): $summary p95 < 300 ms. Not a test.

Baseline, in the same run: the raw SQL that fetches every current row the patient owns
(``SELECT res_type, id, content FROM resource WHERE patient_id = …``, psycopg, all rows
fetched), so the summary's cost reads as a ratio to "just reading the record".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.common import (
    DEFAULT_ADMIN_URL,
    BenchError,
    CpuMeter,
    Databases,
    Service,
    free_port,
    healthmesh_argv,
    run_measured,
)
from bench.dataset import SYNTHEA_DIR

TARGET_P95_MS = 300.0
_SHARED = frozenset({"Patient", "Practitioner", "Organization", "Location", "Medication"})


def largest_patient() -> Path:
    files = sorted(
        SYNTHEA_DIR.glob("*_*.json"), key=lambda p: len(orjson.loads(p.read_bytes())["entry"])
    )
    if not files:
        raise BenchError(f"no Synthea patients in {SYNTHEA_DIR}")
    return files[-1]


def scaled(source: Path, copies: int, out: Path) -> tuple[Path, int]:
    """A transaction Bundle: ``source``'s clinical entries ``copies`` times, fresh urn:uuids."""
    bundle = orjson.loads(source.read_bytes())
    entries = bundle["entry"]
    kept = [e for e in entries if e["resource"]["resourceType"] in _SHARED]
    clinical = [e for e in entries if e["resource"]["resourceType"] not in _SHARED]
    text = orjson.dumps(clinical).decode()
    made: list[Any] = []
    for k in range(copies):
        copy = text
        for entry in clinical:
            old = entry["fullUrl"].removeprefix("urn:uuid:")
            copy = copy.replace(old, str(uuid.uuid5(uuid.NAMESPACE_URL, f"copy-{k}-{old}")))
        made += orjson.loads(copy)
    for entry in made:
        entry["resource"].pop("id", None)
    result = {**bundle, "entry": kept + made}
    # a different identifier, so the scaled patient is not the loaded original
    patient = next(
        e["resource"] for e in result["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["identifier"] = [{"system": "urn:bench:summary", "value": "scaled"}]
    path = out / "scaled-patient.json"
    path.write_bytes(orjson.dumps(result))
    return path, len(result["entry"])


def timings(
    client: httpx.Client, path: str, n: int, meters: tuple[CpuMeter, CpuMeter]
) -> tuple[list[float], int, int, float, float]:
    """Wall ms per request; entries, bytes; CPU ms per request of the server and PostgreSQL.

    The CPU figures do not depend on what else the machine is doing: on an idle machine a
    request cannot take less wall time than its server CPU plus its PostgreSQL CPU.
    """
    for _ in range(3):  # warm-up: connections, caches, first-use imports
        client.get(path).raise_for_status()
    server, database = meters[0].start(), meters[1].start()
    seconds = []
    size = entries = 0
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
        entries = len(response.json()["entry"])
    server_ms, database_ms = server.stop() * 1000 / n, database.stop() * 1000 / n
    return [s * 1000 for s in seconds], entries, size, server_ms, database_ms


def sql_timings(url: str, pid: str, n: int) -> tuple[list[float], int, int]:
    """Wall ms of fetching every current row ``pid`` owns with one plain statement."""
    query = "SELECT res_type, id, content FROM resource WHERE patient_id = %s AND NOT deleted"
    with psycopg.connect(url) as conn:
        for _ in range(3):
            conn.execute(query, (pid,)).fetchall()
        seconds, rows = [], []
        for _ in range(n):
            started = time.perf_counter()
            rows = conn.execute(query, (pid,)).fetchall()
            seconds.append(time.perf_counter() - started)
    return [s * 1000 for s in seconds], len(rows), sum(len(r[2] or "") for r in rows)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--name", default="summary", help="scratch database bench_NAME")
    args = parser.parse_args(argv)
    databases = Databases(args.database_url)
    source = largest_patient()
    try:
        url = databases.create(args.name)
        with tempfile.TemporaryDirectory() as work:
            big, big_count = scaled(source, args.copies, Path(work))
            load = run_measured(
                healthmesh_argv("load", "--quiet", "--database-url", url, str(source), str(big))
            )
            if load.returncode != 0:
                raise BenchError(f"healthmesh load failed:\n{load.output[-3000:]}")
        port = free_port()
        with (
            Service(
                healthmesh_argv("serve", "--open", "--port", str(port), "--database-url", url), port
            ) as service,
            httpx.Client(base_url=service.base + "/fhir", timeout=60) as client,
        ):
            rows = []
            original = orjson.loads(source.read_bytes())["entry"]
            synthea = next(
                e["resource"] for e in original if e["resource"]["resourceType"] == "Patient"
            )
            first = synthea["identifier"][0]
            for label, identifier in (
                (
                    f"{source.name[:40]} ({len(original)} resources)",
                    f"{first['system']}|{first['value']}",
                ),
                (f"scaled x{args.copies} ({big_count} resources)", "urn:bench:summary|scaled"),
            ):
                found = client.get("/Patient", params={"identifier": identifier}).json()
                pid = found["entry"][0]["resource"]["id"]
                ms, count, size = sql_timings(url, pid, args.requests)
                baseline = p(ms, 0.95)
                rows.append(
                    (
                        label,
                        "raw SQL",
                        count,
                        size,
                        statistics.median(ms),
                        baseline,
                        max(ms),
                        0.0,
                        0.0,
                    )
                )
                for operation in ("$summary", "$shared-bundle"):
                    meters = (CpuMeter(service.pid), CpuMeter(database_url=url))
                    ms, entries, size, cpu, pg = timings(
                        client, f"/Patient/{pid}/{operation}", args.requests, meters
                    )
                    p50, p95 = statistics.median(ms), p(ms, 0.95)
                    rows.append((label, operation, entries, size, p50, p95, max(ms), cpu, pg))
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(
            f"{'patient':58} {'operation':15} {'entries':>7} {'bytes':>9} {'p50 ms':>8}"
            f" {'p95 ms':>8} {'max ms':>8} {'server CPU':>10} {'PG CPU':>7} p95/SQL"
        )
        base_p95 = 0.0
        for label, operation, entries, size, p50, p95, worst, cpu, pg in rows:
            if operation == "raw SQL":
                base_p95 = p95
            ratio = f"{p95 / base_p95:6.1f}x" if base_p95 else ""
            print(
                f"{label:58} {operation:15} {entries:7d} {size:9d} {p50:8.1f} {p95:8.1f}"
                f" {worst:8.1f} {cpu:10.1f} {pg:7.1f} {ratio}"
            )
        summaries = [r for r in rows if r[1] == "$summary"]
        met = all(r[5] < TARGET_P95_MS for r in summaries)
        print(f"$summary p95 < {TARGET_P95_MS:.0f} ms: {'met' if met else 'NOT met'}")
        return 0 if met else 1
    finally:
        databases.drop_all()


if __name__ == "__main__":
    sys.exit(main())
