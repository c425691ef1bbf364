"""(a) Ingest: ``healthmesh load`` and HTTP transactions, each beside a raw COPY baseline.

Every measurement gets a fresh database. The baseline is the floor PostgreSQL sets for the
same resources: parse each resource's JSON, COPY ``(id, json)`` into a bare
``(id text primary key, content jsonb)`` table over one connection, commit. The server does
much more per resource (validation, reference rewriting, versions, search index rows), so the
ratio says what all of that costs, not how far off "correct" it is.

The loader's peak RSS (d) comes from wait4() on its process: the kernel's own high-water mark.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bench.common import (
    BenchError,
    Context,
    CpuMeter,
    Figure,
    MachineMeter,
    Section,
    Service,
    TreeRss,
    free_port,
    healthmesh_argv,
    proc_status_kb,
    quiet_check,
    run_measured,
)
from bench.dataset import Dataset

LOADER_RSS_TARGET_MB = 300
_REPORT = re.compile(r"([\d,]+) resources in ([\d.]+) s")


@dataclass(slots=True)
class Baseline:
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def copy_baseline(url: str, dataset: Dataset) -> Baseline:
    """Parse and COPY the dataset's resources into a bare table; rows and seconds to commit."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE baseline (id text PRIMARY KEY, content jsonb NOT NULL)")
        conn.commit()
        rows = 0
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY baseline (id, content) FROM STDIN") as copy:
            for row in dataset.baseline_rows():
                copy.write_row(row)
                rows += 1
        conn.commit()
        seconds = time.perf_counter() - started
    return Baseline(rows, seconds)


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM resource WHERE NOT deleted").fetchone()
    return int(row[0]) if row else 0


def _baseline(ctx: Context, suffix: str) -> Baseline:
    url = ctx.databases.create(suffix)
    try:
        result = copy_baseline(url, ctx.dataset)
    finally:
        ctx.databases.drop(url)
    ctx.log.print(f"  baseline COPY: {result.rows:,} rows in {result.seconds:.1f} s")
    return result


# --- healthmesh load -----------------------------------------------------------------------


def bench_cli(ctx: Context, section: Section) -> None:
    busy = quiet_check(ctx)
    base = _baseline(ctx, "ingest_base_cli")
    url = ctx.databases.create("ingest_cli")
    ctx.log.print(f"  healthmesh load {ctx.dataset.root} ...")
    machine = MachineMeter().start()
    run = run_measured(
        healthmesh_argv("load", "--quiet", "--database-url", url, str(ctx.dataset.root))
    )
    machine_busy = machine.stop()
    if run.returncode != 0:
        raise BenchError(f"healthmesh load failed ({run.returncode}):\n{run.output[-3000:]}")
    found = _REPORT.search(run.output)
    loaded = int(found.group(1).replace(",", "")) if found else ctx.dataset.resources
    inner = float(found.group(2)) if found else run.seconds
    count = stored(url)
    ctx.loaded_url = url  # read benchmarks reuse it; the runner drops it at the end
    rate = loaded / inner
    ctx.log.print(
        f"  loaded {loaded:,} in {inner:.1f} s ({run.seconds:.1f} s with start-up),"
        f" peak RSS {run.peak_tree_rss_kb / 1024:.0f} MB"
        f" (main process {run.peak_rss_kb / 1024:.0f} MB)"
    )
    section.figures += [
        Figure(
            "ingest",
            "healthmesh load",
            rate,
            "resources/s",
            versus="COPY baseline",
            versus_value=base.rate,
            note=f"{loaded:,} resources in {inner:.1f} s; {run.seconds:.1f} s with process start",
        ),
        Figure(
            "ingest",
            "loader peak RSS",
            run.peak_tree_rss_kb / 1024,
            "MB",
            target=f"< {LOADER_RSS_TARGET_MB}",
            note=(
                "RSS summed over the process and its workers, sampled every 50 ms;"
                f" main process alone {run.peak_rss_kb / 1024:.0f} MB (wait4)"
            ),
        ),
    ]
    section.details["cli"] = {
        "busy_cores_before": busy,
        "machine_busy_cores": machine_busy,
        "resources": loaded,
        "stored": count,
        "seconds": inner,
        "wall_seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_rss_kb": run.peak_rss_kb,
        "peak_tree_rss_kb": run.peak_tree_rss_kb,
        "baseline": {"rows": base.rows, "seconds": base.seconds},
    }
    if count != ctx.dataset.resources:
        ctx.log.print(
            f"  [yellow]stored {count:,} resources, expected {ctx.dataset.resources:,}[/]"
        )


# --- HTTP transactions ---------------------------------------------------------------------


async def post_bundles(
    base: str, bundles: list[tuple[Path, int]], clients: int
) -> tuple[int, float, list[str]]:
    """POST every Bundle to ``base``/fhir with ``clients`` concurrent clients."""
    queue: asyncio.Queue[tuple[Path, int]] = asyncio.Queue()
    for item in bundles:
        queue.put_nowait(item)
    done = 0
    errors: list[str] = []

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            while not queue.empty():
                path, count = queue.get_nowait()
                body = path.read_bytes()
                response = await http.post(
                    "/fhir", content=body, headers={"content-type": "application/fhir+json"}
                )
                if response.status_code == 200:
                    done += count
                else:
                    errors.append(f"{path.name}: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.perf_counter() - started, errors


def bench_http(ctx: Context, section: Section) -> None:
    bundles = ctx.dataset.http_bundles()  # made before timing anything
    busy_before = quiet_check(ctx)
    base = _baseline(ctx, "ingest_base_http")
    url = ctx.databases.create("ingest_http")
    port = free_port()
    argv = healthmesh_argv("serve", "--open", "--port", str(port), "--database-url", url)
    try:
        with Service(argv, port) as server:
            ctx.log.print(f"  POST {len(bundles)} Bundles, {ctx.clients} clients ...")
            meters = CpuMeter(server.pid).start(), CpuMeter(database_url=url).start()
            machine = MachineMeter().start()
            rss = TreeRss(server.pid).start()
            resources, seconds, errors = asyncio.run(
                post_bundles(server.base, bundles, ctx.clients)
            )
            cpu, pg_cpu = (m.stop() for m in meters)
            busy = machine.stop()
            peak = rss.stop()
            hwm = proc_status_kb(server.pid, "VmHWM")
        count = stored(url)
    finally:
        ctx.databases.drop(url)
    if errors:
        raise BenchError(f"{len(errors)} Bundles failed; first: {errors[0]}")
    rate = resources / seconds
    ctx.log.print(
        f"  {resources:,} resources in {seconds:.1f} s, server peak RSS {peak / 1024:.0f} MB"
    )
    section.figures += [
        Figure(
            "ingest",
            f"HTTP transactions ({ctx.clients} clients)",
            rate,
            "resources/s",
            versus="COPY baseline",
            versus_value=base.rate,
            note=f"{len(bundles)} Bundles, {resources:,} resources in {seconds:.1f} s",
        ),
        Figure(
            "ingest",
            "server peak RSS (HTTP ingest)",
            peak / 1024,
            "MB",
            note="RSS of the server's process tree, sampled every 50 ms",
        ),
    ]
    section.details["http"] = {
        "busy_cores_before": busy_before,
        "machine_busy_cores": busy,
        "bundles": len(bundles),
        "resources": resources,
        "stored": count,
        "seconds": seconds,
        "server_cpu_seconds": cpu,
        "server_cpu_share": cpu / seconds,
        "postgres_cpu_seconds": pg_cpu,
        "peak_tree_rss_kb": peak,
        "vm_hwm_kb": hwm,
        "baseline": {"rows": base.rows, "seconds": base.seconds},
    }


def run(ctx: Context) -> Section:
    section = Section()
    ctx.log.print("[bold]ingest[/] via healthmesh load")
    bench_cli(ctx, section)
    ctx.log.print("[bold]ingest[/] via HTTP transactions")
    bench_http(ctx, section)
    return section
