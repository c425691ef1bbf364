"""(c) read and vread by id at fixed concurrency, against the server, /health and a reference.

- the server: ``healthmesh serve --open`` (one uvicorn worker), read ``GET /fhir/T/id`` and
  vread ``GET /fhir/T/id/_history/1`` of ids drawn at random from the loaded data;
- the server's ``/health``: the same HTTP stack answering without FHIR or the database, the
  ceiling any handler can reach on this machine;
- ``bench/reference_app.py``: bare Starlette + psycopg pool returning the same stored JSON
  from the same database, served by uvicorn the same way: what a handler that does nothing
  but fetch the stored JSON reaches, the yardstick for the server's ratio.

Server and reference run at the same time and take turns, run by run, for ``rounds`` rounds;
the median run of each is reported. The peak RSS (d) is sampled over each app's process
tree. Each run also records the CPU the app, its PostgreSQL backends, the load generator
and everything else on the machine used, to show where the time went.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    BenchError,
    Context,
    CpuMeter,
    Figure,
    MachineMeter,
    OthersMeter,
    Section,
    Service,
    TreeRss,
    free_port,
    healthmesh_argv,
    proc_status_kb,
    quiet_check,
    run_measured,
)
from bench.loadgen import run_load

RATIO_TARGET = 0.70
P99_TARGET_MS = 25.0
MAX_IDS = 100_000
Run = dict[str, Any]  # one load run's figures (Load's fields, rate, CPU shares)


def write_paths(url: str, work: Path) -> tuple[Path, Path, int]:
    """Files of read and vread paths for (up to MAX_IDS) random live resources."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT res_type, id, version_id FROM resource WHERE NOT deleted"
            " ORDER BY random() LIMIT %s",
            (MAX_IDS,),
        ).fetchall()
    if not rows:
        raise BenchError("the database holds no resources to read")
    reads, vreads = work / "read-paths.txt", work / "vread-paths.txt"
    reads.write_text("".join(f"/fhir/{t}/{i}\n" for t, i, _ in rows))
    vreads.write_text("".join(f"/fhir/{t}/{i}/_history/{v}\n" for t, i, v in rows))
    return reads, vreads, len(rows)


def measure(ctx: Context, service: Service, label: str, path: str, paths: Path | None) -> Run:
    """One load run against ``service``; what it served and the CPU everyone used."""
    server_cpu = CpuMeter(service.pid).start()
    pg_cpu = CpuMeter(database_url=ctx.loaded_url).start()
    machine, others = MachineMeter().start(), OthersMeter().start()
    load = run_load(
        service.base + path,
        paths,
        duration=ctx.duration,
        concurrency=ctx.concurrency,
        threads=ctx.wrk_threads,
    )
    cpu, pg, busy = server_cpu.stop(), pg_cpu.stop(), machine.stop()
    # Processes of neither app under test; PostgreSQL backends show up when others use it too.
    busiest = others.stop(set(server_cpu.pids()) | set(pg_cpu.pids()))
    if load.errors:
        raise BenchError(f"{load.errors} failed requests on {label}:\n{service.log_tail()}")
    result: Run = asdict(load) | {
        "rate": load.rate,
        "server_cpu_share": cpu / load.seconds,
        "postgres_cpu_share": pg / load.seconds,
        "generator_cpu_share": load.generator_cpu_share,
        "machine_busy_cores": busy,
        "busiest_other_processes": busiest,
        # What nobody measured here used: other people's work on a shared machine.
        "other_cpu_share": max(
            0.0, busy - cpu / load.seconds - pg / load.seconds - load.generator_cpu_share
        ),
    }
    ctx.log.print(
        f"    {label:<18} {load.rate:>8,.0f} req/s  p50 {load.p50_ms:5.1f} ms"
        f"  p99 {load.p99_ms:5.1f} ms  cores busy: app {cpu / load.seconds:.2f},"
        f" postgres {pg / load.seconds:.2f}, {load.generator.split()[0]}"
        f" {load.generator_cpu_share:.2f}, others {result['other_cpu_share']:.2f}"
    )
    if result["other_cpu_share"] > 0.2:
        for name, cores in busiest:
            ctx.log.print(f"      [dim]other: {cores:.2f} cores {name}[/]", highlight=False)
    return result


def median_run(runs: list[Run]) -> Run:
    """The run with the median rate (the lower middle one for an even count), and all rates."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rates"] = [round(r["rate"], 1) for r in runs]
    chosen["p99s_ms"] = [round(r["p99_ms"], 2) for r in runs]
    chosen["others"] = [round(r["other_cpu_share"], 2) for r in runs]
    return chosen


def warm(ctx: Context, service: Service, paths: Path) -> None:
    run_load(
        service.base + "/",
        paths,
        duration=ctx.warmup,
        concurrency=ctx.concurrency,
        threads=ctx.wrk_threads,
    )


def _figures(name: str, server: Run, reference: Run) -> list[Figure]:
    return [
        Figure(
            "read",
            f"{name} throughput",
            server["rate"],
            "req/s",
            versus="reference app",
            versus_value=reference["rate"],
            target=f">= {RATIO_TARGET}",
            target_on="ratio",
            note=(
                f"median of {len(server['rates'])} runs; reference p99"
                f" {reference['p99_ms']:.1f} ms; others' CPU up to"
                f" {max(server['others'] + reference['others']):.2f} cores"
            ),
        ),
        Figure("read", f"{name} p50", server["p50_ms"], "ms"),
        Figure("read", f"{name} p99", server["p99_ms"], "ms", target=f"< {P99_TARGET_MS:g}"),
    ]


def profile(ctx: Context, service: Service, paths: Path) -> dict[str, Any]:
    """py-spy samples of the server under read load: where its CPU goes."""
    assert ctx.py_spy is not None
    out = ctx.work / "read-profile.txt"
    spy = subprocess.Popen(
        [
            ctx.py_spy,
            "record",
            "--pid",
            str(service.pid),
            "--duration",
            str(max(1, round(ctx.duration))),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    run_load(
        service.base + "/",
        paths,
        duration=ctx.duration,
        concurrency=ctx.concurrency,
        threads=ctx.wrk_threads,
    )
    spy.wait(ctx.duration + 60)
    if not out.exists():
        return {"error": "py-spy wrote no profile (ptrace not permitted?)"}
    return summarize_profile(out)


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self time by function and by package, and inclusive time of the main frames."""
    leaf: collections.Counter[str] = collections.Counter()
    package: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf[frames[-1]] += count
        package[_package(frames[-1])] += count
        for f in set(frames):
            inclusive[f] += count
    if not total:
        return {"samples": 0}

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(v / total, 4)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "self_by_function": share(leaf),
        "self_by_package": share(package),
        "inclusive": share(
            collections.Counter(
                {
                    k: v
                    for k, v in inclusive.items()
                    if "healthmesh" in k and not k.startswith(_ROOT_FRAMES)
                }
            )
        ),
        "file": str(path),
    }


_ROOT_FRAMES = ("<module> ", "main ", "serve ", "_serve ")


def _frame(text: str) -> str:
    """'name (path/to/file.py:12)' without the line number and the site-packages prefix."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def _package(frame: str) -> str:
    where = frame.rsplit("(", 1)[-1].rstrip(")")
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


TARGETS = ("read", "vread", "health")


def run(ctx: Context) -> Section:
    section = Section()
    url = ctx.loaded_url
    if url is None:
        url = ctx.databases.create("read")
        ctx.log.print(f"[bold]read[/]: loading {ctx.dataset.label} first (not timed) ...")
        load = run_measured(
            healthmesh_argv("load", "--quiet", "--database-url", url, str(ctx.dataset.root))
        )
        if load.returncode != 0:
            raise BenchError(f"healthmesh load failed:\n{load.output[-3000:]}")
        ctx.loaded_url = url
    reads, vreads, ids = write_paths(url, ctx.work)
    ctx.log.print(
        f"[bold]read[/]: {ids:,} ids, concurrency {ctx.concurrency}, {ctx.rounds} rounds"
        f" of {ctx.duration:g} s per target, server and reference taking turns"
    )
    section.details["ids"] = ids
    section.details["busy_cores_before"] = quiet_check(ctx)
    what = {"read": ("/", reads), "vread": ("/", vreads), "health": ("/health", None)}

    server_port, ref_port = free_port(), free_port()
    server_argv = healthmesh_argv(
        "serve", "--open", "--port", str(server_port), "--database-url", url
    )
    ref_argv = [
        sys.executable,
        "-m",
        "bench.reference_app",
        "--port",
        str(ref_port),
        "--database-url",
        url,
    ]
    ref_env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs: dict[str, dict[str, list[Run]]] = {
        "server": {t: [] for t in TARGETS},
        "reference": {t: [] for t in TARGETS},
    }
    with (
        Service(server_argv, server_port) as server,
        Service(ref_argv, ref_port, env=ref_env) as ref,
    ):
        services = {"server": server, "reference": ref}
        rss = {name: TreeRss(s.pid).start() for name, s in services.items()}
        for service in services.values():
            warm(ctx, service, reads)
        for round_ in range(ctx.rounds):
            ctx.log.print(f"  round {round_ + 1}/{ctx.rounds}")
            for target in TARGETS:
                path, paths = what[target]
                for name, service in services.items():
                    runs[name][target].append(
                        measure(ctx, service, f"{name} {target}", path, paths)
                    )
        peaks = {name: sampler.stop() for name, sampler in rss.items()}
        hwm = {name: proc_status_kb(s.pid, "VmHWM") for name, s in services.items()}
        if ctx.py_spy:
            ctx.log.print("  profiling the server under read load (py-spy) ...")
            found = section.details["server_profile"] = profile(ctx, server, reads)
            for title in ("self_by_package", "self_by_function", "inclusive"):
                ctx.log.print(f"    {title.replace('_', ' ')}:")
                for name, part in found.get(title, [])[:8]:
                    ctx.log.print(f"      {part:6.1%}  {name}")

    server_runs = {t: median_run(runs["server"][t]) for t in TARGETS}
    ref_runs = {t: median_run(runs["reference"][t]) for t in TARGETS}
    section.figures += _figures("read", server_runs["read"], ref_runs["read"])
    section.figures += _figures("vread", server_runs["vread"], ref_runs["vread"])
    health = server_runs["health"]
    section.figures += [
        Figure(
            "read",
            "/health throughput",
            health["rate"],
            "req/s",
            versus="reference /health",
            versus_value=ref_runs["health"]["rate"],
            note=f"p99 {health['p99_ms']:.1f} ms; the HTTP stack's ceiling",
        ),
        Figure(
            "read",
            "server peak RSS (read runs)",
            peaks["server"] / 1024,
            "MB",
            versus="reference app",
            versus_value=peaks["reference"] / 1024,
            note="RSS of the process tree, sampled every 50 ms",
        ),
    ]
    section.details["server"] = server_runs
    section.details["reference"] = ref_runs
    section.details["peak_rss_kb"] = peaks
    section.details["vm_hwm_kb"] = hwm
    section.details["load_generator"] = "wrk" if shutil.which("wrk") else "httpx processes"
    return section
