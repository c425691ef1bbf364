"""``python -m bench`` (``make bench``): run the benchmarks, print a table, write JSON.

    python -m bench [--only ingest,read] [--scale N] [--duration S] [--database-url URL]
    python -m bench --only search [--keep | --reuse-database bench_search]

Everything runs on this machine against the PostgreSQL at ``--database-url`` (default the
service on 127.0.0.1:5432), in scratch databases named ``bench_*`` that are dropped at the
end. Results go to ``bench/results/<timestamp>.json``. Every step is bounded: a default run
takes about five minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import audit_http, auth, ingest, read, search
from bench.common import (
    DEFAULT_ADMIN_URL,
    BenchError,
    Context,
    Databases,
    Figure,
    Section,
    machine_info,
)
from bench.dataset import SYNTHEA_DIR, open_dataset

BENCHES: dict[str, Callable[[Context], Section]] = {
    "ingest": ingest.run,
    "read": read.run,
    "search": search.run,
    "auth": auth.run,
    "audit": audit_http.run,  # auditing on vs off over HTTP (~3 min)
}
# search loads 1M resources (~7 min idle), auth takes ~4 min: asked for by name
DEFAULT_BENCHES = "ingest,read"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        default=DEFAULT_BENCHES,
        help=f"comma-separated benchmarks to run: {', '.join(BENCHES)} (default: {DEFAULT_BENCHES})",
    )
    parser.add_argument(
        "--dataset",
        choices=["auto", "synthea", "sample"],
        default="auto",
        help="auto: the Synthea set when ../shared is there, else the bundled sample",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help="multiply the data set N times (sample default 24 = 30,720 resources; Synthea 1)",
    )
    parser.add_argument(
        "--synthea-dir", type=Path, default=SYNTHEA_DIR, help="folder of Synthea R4 Bundles"
    )
    parser.add_argument(
        "--duration", type=float, default=10, help="seconds per read measurement (default 10)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="read rounds, server and reference taking turns; medians are reported (default 3)",
    )
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per server")
    parser.add_argument("--concurrency", type=int, default=16, help="read connections")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP ingest clients")
    parser.add_argument(
        "--auth-clients", type=int, default=4, help="concurrent clients asking for tokens"
    )
    parser.add_argument(
        "--auth-flows",
        type=int,
        default=100,
        help="token requests and authorization-code flows timed (flows: at most 1 per patient)",
    )
    parser.add_argument(
        "--auth-no-tokens",
        action="store_true",
        help="auth: measure search under authorization only, not token issuance",
    )
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (or processes)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="an admin connection to a local PostgreSQL >= 15 (bench_* databases are made there)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the server under read load with py-spy (on PATH or $PY_SPY)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        help="wait up to S seconds for an idle machine before each benchmark (default 0)",
    )
    search_options = parser.add_argument_group("search (bench/search.py)")
    search_options.add_argument(
        "--search-resources",
        type=int,
        default=1_000_000,
        help="at least this many resources, whole clones of the Synthea set (default 1,000,000)",
    )
    search_options.add_argument(
        "--search-samples", type=int, default=100, help="parameter sets per query (default 100)"
    )
    search_options.add_argument(
        "--search-clients", type=int, default=4, help="clients in the throughput runs (default 4)"
    )
    search_options.add_argument("--seed", type=int, default=1, help="seed for the parameters")
    kept = search_options.add_mutually_exclusive_group()
    kept.add_argument("--keep", action="store_true", help="keep the bench_search database")
    kept.add_argument(
        "--reuse-database",
        metavar="NAME",
        default=None,
        help="search and auth: measure this existing database (from --keep) instead of loading one",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.0f} {unit}".strip()


def render(figures: list[Figure], machine: dict[str, Any], dataset: dict[str, Any]) -> Table:
    table = Table(
        title=(
            f"HealthMesh benchmarks: {dataset['label']}, {dataset['resources']:,} resources\n"
            f"{machine['nproc']} x {machine['cpu_model']}, {machine['ram_gib']} GiB,"
            f" PostgreSQL {machine['postgresql']}, Python {machine['python']}"
        )
    )
    for column, justify in (
        ("bench", "left"),
        ("measure", "left"),
        ("value", "right"),
        ("compared with", "left"),
        ("its value", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        met = f.met()
        ratio = f.ratio
        table.add_row(
            f.bench,
            f.name,
            _fmt(f.value, f.unit),
            f.versus or "",
            _fmt(f.versus_value, f.unit),
            f"{ratio:.2f}" if ratio is not None else "",
            (("ratio " if f.target_on == "ratio" else "") + f.target) if f.target else "",
            "" if met is None else ("[green]ok[/]" if met else "[red]MISSED[/]"),
        )
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress on stderr, the table on stdout; wide enough to stay readable when piped.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    out_console = Console(width=None if sys.stdout.isatty() else 140)
    py_spy = None
    if args.profile:
        py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
        if not py_spy:
            console.print("[yellow]--profile: py-spy not found (PATH or $PY_SPY); skipping[/]")
    databases = Databases(args.database_url)
    machine = machine_info(databases)
    started = time.perf_counter()
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="healthmesh-bench-") as tmp:
        work = Path(tmp)
        dataset = open_dataset(args.dataset, args.scale, work, args.synthea_dir)
        console.print(f"data set: {dataset.label}, {dataset.resources:,} resources")
        ctx = Context(
            databases=databases,
            dataset=dataset,
            work=work,
            duration=args.duration,
            rounds=args.rounds,
            warmup=args.warmup,
            concurrency=args.concurrency,
            clients=args.clients,
            wrk_threads=args.wrk_threads,
            py_spy=py_spy,
            log=console,
            wait_quiet=args.wait_quiet,
            reuse_database=args.reuse_database,
            keep=args.keep,
            search_resources=args.search_resources,
            search_samples=args.search_samples,
            search_clients=args.search_clients,
            seed=args.seed,
            synthea_dir=args.synthea_dir,
            auth_clients=args.auth_clients,
            auth_flows=args.auth_flows,
            auth_tokens=not args.auth_no_tokens,
        )
        failed: list[str] = []
        try:
            for name in args.only.split(","):
                try:
                    section = BENCHES[name](ctx)
                except BenchError as error:
                    console.print(f"[red]{name} failed:[/] {error}")
                    failed.append(name)
                    continue
                figures += section.figures
                details[name] = section.details
        finally:
            databases.drop_all()
        described = dataset.describe()
    seconds = time.perf_counter() - started
    out_console.print(render(figures, machine, described))
    for f in figures:
        if f.note:
            out_console.print(f"  [dim]{f.bench} / {f.name}: {f.note}[/]", highlight=False)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "seconds": round(seconds, 1),
                "argv": sys.argv[1:] if argv is None else argv,
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "machine": machine,
                "dataset": described,
                "figures": [f.as_json() for f in figures],
                "details": details,
                "failed": failed,
            },
            indent=2,
            default=str,
        )
    )
    console.print(f"results: {out}  ({seconds:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
