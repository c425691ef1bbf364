"""HTTP load: wrk with a Lua script (preferred), or several httpx processes when wrk is missing.

Either way: ``concurrency`` connections kept busy for ``duration`` seconds, each request a
GET of a path drawn at random from a list file, and latency percentiles at the end. The CPU
time the generator itself used is measured too, so a run can show it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import resource
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import BenchError, run_measured

LUA = Path(__file__).with_name("wrk_paths.lua")


@dataclass(slots=True)
class Load:
    generator: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def generator_cpu_share(self) -> float:
        """Cores the load generator kept busy on average (1.0 = one whole core)."""
        return self.generator_cpu_seconds / self.seconds


def run_load(
    url: str,
    paths: Path | None,
    *,
    duration: float,
    concurrency: int,
    threads: int,
    script: Path = LUA,
) -> Load:
    """``script``: another wrk Lua script taking the list file (bench/wrk_auth.lua sends a
    bearer token per line); only the default one has an httpx fallback."""
    if shutil.which("wrk"):
        return _wrk(
            url, paths, duration=duration, concurrency=concurrency, threads=threads, script=script
        )
    if script != LUA:
        raise BenchError(f"{script.name} needs wrk (apt-get install wrk)")
    return _httpx(url, paths, duration=duration, concurrency=concurrency, processes=threads)


def _wrk(
    url: str,
    paths: Path | None,
    *,
    duration: float,
    concurrency: int,
    threads: int,
    script: Path = LUA,
) -> Load:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    if paths is not None:
        argv += ["--", str(paths)]
    run = run_measured(argv, timeout=duration + 60)
    lines = [line for line in run.output.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({run.returncode}):\n{run.output[-2000:]}")
    data = json.loads(lines[-1])
    errors = sum(
        data[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return Load(
        generator=f"wrk -t{threads} -c{concurrency}",
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        generator_cpu_seconds=run.cpu_seconds,
    )


# --- the fallback: httpx in several processes ------------------------------------------------


def _worker(
    url: str, paths: list[str], duration: float, connections: int
) -> tuple[list[float], int]:
    async def main() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            deadline = time.perf_counter() + duration

            async def loop() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        response = await client.get(random.choice(paths))
                        if response.status_code >= 400:
                            errors += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(loop() for _ in range(connections)))
        return latencies, errors

    return asyncio.run(main())


def _httpx(
    url: str, paths: Path | None, *, duration: float, concurrency: int, processes: int
) -> Load:
    targets = paths.read_text().split() if paths is not None else [httpx.URL(url).path or "/"]
    base = str(httpx.URL(url).copy_with(path="/"))
    processes = max(1, min(processes, concurrency))
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_worker, [(base, targets, duration, n) for n in per])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(x for lat, _ in parts for x in lat)
    if not latencies:
        raise BenchError("the httpx load generator made no request")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return Load(
        generator=f"httpx x{processes} processes, {concurrency} connections",
        requests=len(latencies),
        seconds=duration,  # each worker's busy time; process start-up is left out
        errors=sum(e for _, e in parts),
        p50_ms=q[49] * 1000,
        p90_ms=q[89] * 1000,
        p99_ms=q[98] * 1000,
        max_ms=latencies[-1] * 1000,
        generator_cpu_seconds=(after.ru_utime + after.ru_stime)
        - (before.ru_utime + before.ru_stime),
    )
