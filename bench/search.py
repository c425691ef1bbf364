"""(e) Search at a million resources: a fixed query mix over HTTP beside hand-written SQL.

- data: the Synthea set (or the bundled sample) multiplied by ``bench.multiply`` to at least
  ``--search-resources`` (default 1,000,000) in whole clones, with a Provenance per Patient
  (the shared sets have Synthea's stripped), loaded by ``healthmesh load`` into a fresh
  ``bench_search`` database; the load is timed (rate, CPU, peak RSS) and its figures kept in
  the database (table ``bench_meta``), so ``--reuse-database`` runs report them too;
- the index cost: rows and bytes (``pg_total_relation_size``: heap, indexes, TOAST) of each
  ``search_*`` table per stored resource;
- the query mix (:mod:`bench.search_mix`): each query's parameters drawn at random, with a
  fixed seed, from the loaded data; each run once against ``healthmesh serve --open`` over
  HTTP and once as the SQL a person would write against the same tables, alternating, on the
  same database in the same run; p50/p95 per query and side, the ratio of the medians, and
  throughput (``--search-clients`` concurrent clients cycling through the mix).

``--reuse-database NAME`` skips data and load and measures an existing ``bench_*`` database
(made by an earlier ``--keep`` run); ``--keep`` leaves the database in place at the end.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

from bench.common import (
    BenchError,
    Context,
    CpuMeter,
    Figure,
    MachineMeter,
    OthersMeter,
    Section,
    Service,
    free_port,
    healthmesh_argv,
    quiet_check,
    reused_url,
    run_measured,
)
from bench.multiply import multiply, sample_path
from bench.search_explain import explain, server_statements
from bench.search_mix import MIX, Params, Query, draw

DEFAULT_RESOURCES = 1_000_000
RATIO_TARGET = 3.0  # no query slower than 3x its hand-written SQL
LOADER_RSS_TARGET_MB = 300  # the foundation's loader target (docs/PERFORMANCE.md)
INGEST_RATE_30K = 2714  # resources/s, `healthmesh load` on the 30k Synthea set (PERFORMANCE.md)
_REPORT = re.compile(r"([\d,]+) resources in ([\d.]+) s")
INDEX_TABLES = (
    "search_token",
    "search_string",
    "search_date",
    "search_number",
    "search_quantity",
    "search_uri",
    "search_reference",
)


# --- data and load -------------------------------------------------------------------------


def prepare(url: str, *, resources: int, source: Path, work: Path, log: Any) -> dict[str, Any]:
    """Multiply ``source`` to >= ``resources`` (whole clones), load it into ``url``, timed.

    The figures go into ``bench_meta`` in the same database and are returned.
    """
    out = work / "search-ndjson"
    one = multiply(out, clones=1, source=source, provenance=True)
    clones = max(1, math.ceil(resources / one.resources))
    made = multiply(out, clones=clones, source=source, provenance=True)
    log.print(
        f"  data: {made.resources:,} resources ({clones} clones of {one.resources:,}),"
        f" {made.bytes_written / 1e6:,.0f} MB of JSON, made in {made.seconds:.0f} s"
    )
    log.print(f"  healthmesh load {out} (one pass, timed) ...")
    machine, others = MachineMeter().start(), OthersMeter().start()
    pg_cpu = CpuMeter(database_url=url).start()
    run = run_measured(
        healthmesh_argv("load", "--quiet", "--database-url", url, str(out)), timeout=4 * 3600
    )
    busy, pg = machine.stop(), pg_cpu.stop()
    if run.returncode != 0:
        raise BenchError(f"healthmesh load failed ({run.returncode}):\n{run.output[-3000:]}")
    found = _REPORT.search(run.output)
    loaded = int(found.group(1).replace(",", "")) if found else made.resources
    seconds = float(found.group(2)) if found else run.seconds
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(source),
        "clones": clones,
        "resources": loaded,
        "json_bytes": made.bytes_written,
        "seconds": seconds,
        "wall_seconds": run.seconds,
        "rate": loaded / seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_tree_rss_kb": run.peak_tree_rss_kb,
        "peak_rss_kb": run.peak_rss_kb,
        "postgres_cpu_seconds": pg,
        "machine_busy_cores": busy,
        # What neither the loader nor its database used: other people's work on the machine.
        "other_cpu_share": max(0.0, busy - (run.cpu_seconds + pg) / run.seconds),
        "busiest_other_processes": others.stop(set()),
    }
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value jsonb)")
        conn.execute(
            "INSERT INTO bench_meta VALUES ('load', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(report),),
        )
    log.print(
        f"  loaded {loaded:,} in {seconds:.0f} s ({loaded / seconds:,.0f}/s),"
        f" peak RSS {run.peak_tree_rss_kb / 1024:.0f} MB, machine {busy:.2f} cores busy"
    )
    return report


def load_report(url: str) -> dict[str, Any] | None:
    """The load figures an earlier run stored with the data, if any."""
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('bench_meta') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'load'").fetchone()
    return dict(row[0]) if row else None


def ingest_figures(report: dict[str, Any]) -> list[Figure]:
    return [
        Figure(
            "search",
            "ingest, healthmesh load (1M set)",
            report["rate"],
            "resources/s",
            versus="healthmesh load, 30k set",
            versus_value=INGEST_RATE_30K,
            note=(
                f"{report['resources']:,} resources in {report['seconds']:.0f} s, loaded"
                f" {report['when']}, machine {report['machine_busy_cores']:.2f} cores busy;"
                f" 30k figure from docs/PERFORMANCE.md"
            ),
        ),
        Figure(
            "search",
            "loader peak RSS (1M set)",
            report["peak_tree_rss_kb"] / 1024,
            "MB",
            target=f"< {LOADER_RSS_TARGET_MB}",
            note=f"main process {report['peak_rss_kb'] / 1024:.0f} MB",
        ),
    ]


# --- index cost ----------------------------------------------------------------------------


def index_cost(url: str) -> dict[str, Any]:
    """Rows and bytes (heap + indexes + TOAST) of every search_* table, and per resource."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM resource WHERE NOT deleted").fetchone()
        resources = int(row[0]) if row else 0
        tables: dict[str, dict[str, int]] = {}
        for table in INDEX_TABLES:
            counted = conn.execute(
                sql.SQL("SELECT count(*), pg_total_relation_size({}::regclass) FROM {}").format(
                    sql.Literal(table), sql.Identifier(table)
                )
            ).fetchone()
            assert counted is not None
            tables[table] = {"rows": int(counted[0]), "bytes": int(counted[1])}
        sized = conn.execute(
            "SELECT pg_total_relation_size('resource'), pg_database_size(current_database())"
        ).fetchone()
        assert sized is not None
    rows = sum(t["rows"] for t in tables.values())
    nbytes = sum(t["bytes"] for t in tables.values())
    return {
        "resources": resources,
        "tables": tables,
        "index_rows": rows,
        "index_bytes": nbytes,
        "rows_per_resource": rows / max(1, resources),
        "bytes_per_resource": nbytes / max(1, resources),
        "resource_table_bytes": int(sized[0]),
        "database_bytes": int(sized[1]),
    }


# --- one query, both ways ------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """What a query returned, in a form both sides can be compared by."""

    matches: list[str]
    includes: frozenset[str] = frozenset()
    total: int | None = None


def http_answer(query: Query, body: bytes) -> Answer:
    bundle = orjson.loads(body)
    if query.shape == "count":
        return Answer([], total=bundle.get("total"))
    entries = bundle.get("entry", [])
    matches = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]
    includes = frozenset(e["resource"]["id"] for e in entries if e["search"]["mode"] == "include")
    return Answer(matches, includes)


def sql_answer(query: Query, rows: list[tuple[Any, ...]]) -> Answer:
    if query.shape == "count":
        return Answer([], total=int(rows[0][0]))
    if query.shape == "page+include":
        return Answer(
            [str(r[1]) for r in rows if r[0] == "match"],
            frozenset(str(r[1]) for r in rows if r[0] == "include"),
        )
    return Answer([str(r[0]) for r in rows])


def time_http(http: httpx.Client, query: Query, params: Params) -> tuple[float, Answer]:
    path = query.url(params)
    started = time.perf_counter()
    response = http.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchError(f"{query.name}: {path} answered {response.status_code}: {response.text}")
    return elapsed, http_answer(query, response.content)


def time_sql(conn: psycopg.Connection[Any], query: Query, params: Params) -> tuple[float, Answer]:
    bound = query.sql_params(params)
    started = time.perf_counter()
    rows = conn.execute(query.sql, bound).fetchall()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, sql_answer(query, rows)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class Timings:
    http_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    same: int = 0
    differ: list[dict[str, Any]] = field(default_factory=list)
    results: list[int] = field(default_factory=list)  # matches (or the total) per sample

    def summary(self) -> dict[str, Any]:
        return {
            "samples": len(self.http_ms),
            "http_p50_ms": statistics.median(self.http_ms),
            "http_p95_ms": percentile(self.http_ms, 95),
            "http_max_ms": max(self.http_ms),
            "sql_p50_ms": statistics.median(self.sql_ms),
            "sql_p95_ms": percentile(self.sql_ms, 95),
            "sql_max_ms": max(self.sql_ms),
            "ratio_p50": statistics.median(self.http_ms) / statistics.median(self.sql_ms),
            "ratio_p95": percentile(self.http_ms, 95) / percentile(self.sql_ms, 95),
            "same_answer": self.same,
            "different_answer": len(self.differ),
            "first_differences": self.differ[:3],
            "results_median": statistics.median(self.results),
            "results_max": max(self.results),
        }


def latency_pass(
    base: str, url: str, samples: dict[str, list[Params]], *, warmup: int
) -> dict[str, Timings]:
    """Every sample of every query, over HTTP and as SQL, one client each, taking turns.

    Queries are interleaved (sample k of each query, then k + 1) and the side that goes first
    alternates, so a disturbance on the machine hits every query and both sides alike.
    """
    timings = {q.name: Timings() for q in MIX}
    count = min(len(samples[q.name]) for q in MIX)
    with (
        httpx.Client(
            base_url=base, timeout=120, headers={"accept": "application/fhir+json"}
        ) as http,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn,
    ):
        for k in range(-min(warmup, count), count):
            for query in MIX:
                params = samples[query.name][k % count]
                if k % 2 == 0:
                    h_ms, h = time_http(http, query, params)
                    s_ms, s = time_sql(conn, query, params)
                else:
                    s_ms, s = time_sql(conn, query, params)
                    h_ms, h = time_http(http, query, params)
                if k < 0:
                    continue  # warm-up: caches, connections, the planner's statistics
                t = timings[query.name]
                t.http_ms.append(h_ms)
                t.sql_ms.append(s_ms)
                t.results.append(h.total if h.total is not None else len(h.matches))
                if h == s:
                    t.same += 1
                else:
                    t.differ.append({"url": query.url(params), "http": _short(h), "sql": _short(s)})
    return timings


def _short(a: Answer) -> dict[str, Any]:
    return {
        "matches": a.matches[:5],
        "n": len(a.matches),
        "includes": len(a.includes),
        "total": a.total,
    }


# --- throughput ----------------------------------------------------------------------------


def throughput_run(
    side: str, base: str, url: str, work: list[tuple[Query, Params]], clients: int, seconds: float
) -> tuple[int, float, int]:
    """``clients`` threads cycling through ``work`` for ``seconds``: requests done, elapsed,
    errors. Each thread starts at a different place in the list."""
    stop = threading.Event()
    done = [0] * clients
    errors = [0] * clients

    def client(n: int) -> None:
        k = n * len(work) // clients
        if side == "http":
            with httpx.Client(
                base_url=base, timeout=120, headers={"accept": "application/fhir+json"}
            ) as http:
                while not stop.is_set():
                    query, params = work[k % len(work)]
                    response = http.get(query.url(params))
                    if response.status_code == 200:
                        done[n] += 1
                    else:
                        errors[n] += 1
                    k += 1
        else:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                while not stop.is_set():
                    query, params = work[k % len(work)]
                    conn.execute(query.sql, query.sql_params(params)).fetchall()
                    done[n] += 1
                    k += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done), time.perf_counter() - started, sum(errors)


def median_rate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["rate"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rates"] = [round(r["rate"], 1) for r in runs]
    chosen["others"] = [round(r["other_cpu_share"], 2) for r in runs]
    return chosen


def measure_throughput(
    ctx: Context, server: Service, url: str, samples: dict[str, list[Params]]
) -> dict[str, dict[str, Any]]:
    """Rounds of ``ctx.duration`` s per side, the sides taking turns; the median round each."""
    rng = random.Random(ctx.seed)
    work = [(q, p) for q in MIX for p in samples[q.name]]
    rng.shuffle(work)
    runs: dict[str, list[dict[str, Any]]] = {"http": [], "sql": []}
    for round_ in range(ctx.rounds):
        for side in ("http", "sql") if round_ % 2 == 0 else ("sql", "http"):
            server_cpu = CpuMeter(server.pid).start()
            pg_cpu = CpuMeter(database_url=url).start()
            machine, others = MachineMeter().start(), OthersMeter().start()
            me = CpuMeter(os.getpid()).start()
            done, seconds, errors = throughput_run(
                side, server.base, url, work, ctx.search_clients, ctx.duration
            )
            cpu, pg, mine, busy = server_cpu.stop(), pg_cpu.stop(), me.stop(), machine.stop()
            busiest = others.stop(set(server_cpu.pids()) | set(pg_cpu.pids()))
            if errors:
                raise BenchError(f"{errors} failed requests in the throughput run")
            app = cpu / seconds if side == "http" else 0.0
            run: dict[str, Any] = {
                "requests": done,
                "seconds": seconds,
                "rate": done / seconds,
                "server_cpu_share": app,
                "postgres_cpu_share": pg / seconds,
                "client_cpu_share": mine / seconds,
                "machine_busy_cores": busy,
                "busiest_other_processes": busiest,
                "other_cpu_share": max(0.0, busy - app - (pg + mine) / seconds),
            }
            runs[side].append(run)
            ctx.log.print(
                f"    {side:<5} {run['rate']:>7,.0f} req/s  cores busy: server {app:.2f},"
                f" postgres {pg / seconds:.2f}, clients {mine / seconds:.2f},"
                f" others {run['other_cpu_share']:.2f}"
            )
    return {side: median_rate(r) for side, r in runs.items()}


def plans(url: str, samples: dict[str, list[Params]]) -> dict[str, dict[str, Any]]:
    """The server's statements and the hand-written SQL for each query's first sample, each
    with its EXPLAIN (ANALYZE, BUFFERS): where to look first when a query misses."""
    found = {}
    for query in MIX:
        params = samples[query.name][0]
        path = query.url(params)
        server = server_statements(url, path)
        found[query.name] = {
            "url": path,
            "server": [{"sql": s, "plan": explain(url, s)} for s in server],
            "hand_written": {
                "sql": query.sql,
                "params": {k: str(v) for k, v in query.sql_params(params).items()},
                "plan": explain(url, query.sql, query.sql_params(params)),
            },
        }
    return found


# --- the benchmark -------------------------------------------------------------------------


def _database(ctx: Context) -> tuple[str, dict[str, Any] | None]:
    """The database to measure, loaded here or by an earlier run, and its load figures."""
    if ctx.reuse_database:
        name = ctx.reuse_database
        url = reused_url(ctx)
        try:
            report = load_report(url)
        except psycopg.OperationalError as error:
            raise BenchError(f"cannot use database {name}: {error}") from error
        ctx.log.print(f"[bold]search[/]: reusing {name} (loaded {report and report['when']})")
        return url, report
    url = ctx.databases.create("search")
    if ctx.keep:  # the runner drops what it made, except this
        ctx.databases.created.remove("bench_search")
    source = ctx.synthea_dir if ctx.synthea_dir and ctx.synthea_dir.is_dir() else sample_path()
    ctx.log.print(f"[bold]search[/]: {ctx.search_resources:,}+ resources from {source}")
    report = prepare(url, resources=ctx.search_resources, source=source, work=ctx.work, log=ctx.log)
    return url, report


def _query_figures(query: Query, s: dict[str, Any]) -> list[Figure]:
    answers = f"{s['same_answer']}/{s['samples']} samples gave the SQL's answer"
    figures = [
        Figure(
            "search",
            f"{query.name}: p95",
            s["http_p95_ms"],
            "ms",
            versus="hand-written SQL p95",
            versus_value=s["sql_p95_ms"],
            target=f"< {query.p95_target_ms:g}" if query.p95_target_ms else None,
            note=f"{query.description}; {answers}; median {s['results_median']:g} results",
        ),
        Figure(
            "search",
            f"{query.name}: p50",
            s["http_p50_ms"],
            "ms",
            versus="hand-written SQL p50",
            versus_value=s["sql_p50_ms"],
            target=f"<= {RATIO_TARGET:g}",
            target_on="ratio",
        ),
    ]
    return figures


def run(ctx: Context) -> Section:
    section = Section()
    url, report = _database(ctx)
    # A reused database may predate a migration: apply it here, timed, not at server start.
    migrated = run_measured(healthmesh_argv("migrate", "--database-url", url), timeout=3600)
    if migrated.returncode != 0:
        raise BenchError(f"healthmesh migrate failed:\n{migrated.output[-3000:]}")
    section.details["migrate_seconds"] = migrated.seconds
    # The steady state of a database, whatever the load left: statistics fresh and the
    # visibility map set, which index-only plans need (autovacuum gets there minutes after
    # a bulk load; the loader itself only ANALYZEs). Both sides of the comparison gain.
    ctx.log.print("  VACUUM (ANALYZE) ...")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    section.details["vacuum_seconds"] = time.perf_counter() - started
    section.details["load"] = report
    if report:
        section.figures += ingest_figures(report)
    ctx.log.print("  index cost (counting rows) ...")
    cost = section.details["index_cost"] = index_cost(url)
    section.figures += [
        Figure(
            "search",
            "index rows per resource",
            cost["rows_per_resource"],
            "rows",
            note=f"{cost['index_rows']:,} rows in the search_* tables for {cost['resources']:,}"
            " resources",
        ),
        Figure(
            "search",
            "index bytes per resource",
            cost["bytes_per_resource"],
            "B",
            note=(
                f"{cost['index_bytes'] / 2**20:,.0f} MiB (tables + their B-trees); resource table"
                f" {cost['resource_table_bytes'] / 2**20:,.0f} MiB,"
                f" database {cost['database_bytes'] / 2**20:,.0f} MiB"
            ),
        ),
    ]
    with psycopg.connect(url) as conn:
        samples = draw(conn, ctx.search_samples, ctx.seed)
    section.details["samples"] = {name: len(s) for name, s in samples.items()}
    section.details["busy_cores_before"] = quiet_check(ctx)
    port = free_port()
    argv = healthmesh_argv("serve", "--open", "--port", str(port), "--database-url", url)
    with Service(argv, port) as server:
        ctx.log.print(
            f"  latency: {len(MIX)} queries x {ctx.search_samples} samples, HTTP and SQL"
            " taking turns, one client each"
        )
        meters = CpuMeter(server.pid).start(), CpuMeter(database_url=url).start()
        machine, others = MachineMeter().start(), OthersMeter().start()
        started = time.perf_counter()
        timings = latency_pass(server.base, url, samples, warmup=5)
        seconds = time.perf_counter() - started
        cpu, pg = (m.stop() for m in meters)
        busy = machine.stop()
        busiest = others.stop(set(meters[0].pids()) | set(meters[1].pids()))
        # The client (this process) uses a little CPU too; counted with the others here.
        section.details["latency_cpu"] = {
            "seconds": seconds,
            "server_cpu_share": cpu / seconds,
            "postgres_cpu_share": pg / seconds,
            "machine_busy_cores": busy,
            "other_cpu_share": max(0.0, busy - (cpu + pg) / seconds),
            "busiest_other_processes": busiest,
        }
        summaries = {}
        for query in MIX:
            s = summaries[query.name] = timings[query.name].summary()
            ctx.log.print(
                f"    {query.name:<32} HTTP p50 {s['http_p50_ms']:6.1f} p95 {s['http_p95_ms']:6.1f}"
                f"  SQL p50 {s['sql_p50_ms']:6.1f} p95 {s['sql_p95_ms']:6.1f}"
                f"  x{s['ratio_p50']:.1f}  same {s['same_answer']}/{s['samples']}"
            )
            section.figures += _query_figures(query, s)
        section.details["queries"] = summaries
        ctx.log.print(
            f"    cores busy: server {cpu / seconds:.2f}, postgres {pg / seconds:.2f},"
            f" others {section.details['latency_cpu']['other_cpu_share']:.2f}"
        )
        ctx.log.print(
            f"  throughput: {ctx.search_clients} clients cycling through the mix,"
            f" {ctx.rounds} rounds of {ctx.duration:g} s per side"
        )
        rates = section.details["throughput"] = measure_throughput(ctx, server, url, samples)
    section.figures.append(
        Figure(
            "search",
            f"mix throughput ({ctx.search_clients} clients)",
            rates["http"]["rate"],
            "req/s",
            versus="hand-written SQL",
            versus_value=rates["sql"]["rate"],
            note=(
                f"median of {ctx.rounds} rounds; server at {rates['http']['server_cpu_share']:.2f}"
                f" cores; others' CPU up to"
                f" {max(rates['http']['others'] + rates['sql']['others']):.2f} cores"
            ),
        )
    )
    ctx.log.print("  EXPLAIN ANALYZE of each query's first sample, both ways ...")
    section.details["plans"] = plans(url, samples)
    section.details["database"] = str(psycopg.conninfo.conninfo_to_dict(url).get("dbname"))
    section.details["kept"] = bool(ctx.reuse_database or ctx.keep)
    return section
