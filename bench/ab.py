"""Interleaved A/B of servers on a database loaded already: the privacy issue's targets —
"consent and label filters on vs off" and "read throughput with auditing on vs off" — as
neighbouring runs, many rounds.

    python -m bench.ab --database-url URL --rounds 6 --duration 8 \\
        on=--no-audit off=--no-audit,--no-consent before=--no-audit@/path/to/old/src
    python -m bench.ab --database-url URL --reads on= off=--no-audit

Each ``name=switches[@PYTHONPATH]`` is one server (bench/switched.py switches; a PYTHONPATH
runs another checkout's code, e.g. the commit before a change, on the same database). The
auth bench's US Core query mix (bench/auth.py ``query_mix``) goes to every server with one
``system/*.rs`` (or ``--patient``: per-patient ``patient/*.rs``) token, the servers taking
turns each round, in alternating order. On a machine whose speed drifts between runs
(docs/PERFORMANCE.md), a round's ratio of neighbours is the figure to read: each round's
ratio against the last server given is printed, and their median. ``--reads`` sends
``GET /fhir/T/id`` of random resources instead, each with a ``patient/*.rs`` token of its own
patient (bench/audit_http.py's reads): the audit target's load.

Beside throughput, each run's CPU per request is printed: the machine's busy time during the
load less the load generator's own, over the requests served — the server's and the
database's work, which on a saturated machine is what throughput is the inverse of, and which
drifts less than throughput does when the machine's speed does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench import auth_setup
from bench.audit_http import read_lines
from bench.auth import LUA, MAX_PATIENTS, load_patients, query_mix
from bench.common import Service, check_local, free_port, machine_busy_seconds, switched_argv
from bench.loadgen import run_load


def _servers(specs: list[str]) -> dict[str, tuple[list[str], str]]:
    servers: dict[str, tuple[list[str], str]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        switches, _, pythonpath = rest.partition("@")
        if not name or name in servers:
            raise SystemExit(f"bad or repeated server name in {spec!r}")
        servers[name] = ([s for s in switches.split(",") if s], pythonpath)
    return servers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--patient", action="store_true", help="patient tokens, not system")
    parser.add_argument(
        "--reads", action="store_true", help="reads by id with patient tokens, not searches"
    )
    parser.add_argument("servers", nargs="+", help="name=switches[@PYTHONPATH]")
    args = parser.parse_args(argv)
    check_local(args.database_url)
    servers = _servers(args.servers)
    patients = load_patients(args.database_url, MAX_PATIENTS)
    mix = query_mix(args.database_url, patients)
    ports = {name: free_port() for name in servers}
    # Every server answers for the first one's base URL: the tokens' audience.
    audience = f"http://127.0.0.1:{ports[next(iter(servers))]}/fhir"
    rates: dict[str, list[float]] = {name: [] for name in servers}
    p50s: dict[str, list[float]] = {name: [] for name in servers}
    cpus: dict[str, list[float]] = {name: [] for name in servers}  # ms per request
    with ExitStack() as stack, tempfile.TemporaryDirectory() as work:
        running: dict[str, Service] = {}
        for name, (switches, pythonpath) in servers.items():
            argv_ = switched_argv(
                switches, "--port", str(ports[name]), "--database-url", args.database_url
            )
            env = {"HEALTHMESH_BASE_URL": audience} | (
                {"PYTHONPATH": pythonpath} if pythonpath else {}
            )
            running[name] = stack.enter_context(Service(argv_, ports[name], env=env))
        if args.reads:
            ids = sorted(str(p["id"]) for p in patients)
            minted = auth_setup.mint_tokens(
                args.database_url, audience, "bench-patient-app", [("patient/*.rs", i) for i in ids]
            )
            lines = read_lines(args.database_url, dict(zip(ids, minted, strict=True)))
        elif args.patient:
            ids = sorted({pid for pid, _ in mix})
            minted = auth_setup.mint_tokens(
                args.database_url, audience, "bench-patient-app", [("patient/*.rs", i) for i in ids]
            )
            token = dict(zip(ids, minted, strict=True))
            lines = [f"{path}\t{token[pid]}" for pid, path in mix]
        else:
            (system,) = auth_setup.mint_tokens(
                args.database_url, audience, "bench-backend", [("system/*.rs", None)]
            )
            lines = [f"{path}\t{system}" for _, path in mix]
        lines_file = Path(work) / "lines.txt"
        lines_file.write_text("\n".join(lines) + "\n")

        def load(name: str, seconds: float) -> tuple[float, float, float]:
            busy = machine_busy_seconds()
            result = run_load(
                running[name].base + "/",
                lines_file,
                duration=seconds,
                concurrency=args.concurrency,
                threads=2,
                script=LUA,
            )
            busy = machine_busy_seconds() - busy - result.generator_cpu_seconds
            if result.errors:
                raise SystemExit(f"{result.errors} failed requests on {name}")
            return result.rate, result.p50_ms, 1000 * busy / max(1, result.requests)

        for name in running:  # warm-up: plans, caches, the token verifier's key
            load(name, 4)
        what = "reads" if args.reads else "queries"
        print(f"{len(lines):,} {what} of {len(patients)} patients, {args.rounds} rounds")
        for round_ in range(args.rounds):
            order = list(running) if round_ % 2 == 0 else list(running)[::-1]
            for name in order:
                rate, p50, cpu = load(name, args.duration)
                rates[name].append(rate)
                p50s[name].append(p50)
                cpus[name].append(cpu)
            shown = ", ".join(
                f"{n} {rates[n][-1]:,.0f} req/s p50 {p50s[n][-1]:.1f} cpu {cpus[n][-1]:.2f} ms"
                for n in running
            )
            print(f"  round {round_ + 1}: {shown}", flush=True)
    base = list(servers)[-1]
    for name in servers:
        ratios = [a / b for a, b in zip(rates[name], rates[base], strict=True)]
        p50_ratios = [a / b for a, b in zip(p50s[name], p50s[base], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpus[name], cpus[base], strict=True)]
        print(
            f"{name}: {statistics.median(rates[name]):,.0f} req/s; per round vs {base}:"
            f" throughput {statistics.median(ratios):.3f} ({', '.join(f'{r:.2f}' for r in ratios)}),"
            f" p50 {statistics.median(p50_ratios):.3f}×;"
            f" cpu {statistics.median(cpus[name]):.2f} ms/request,"
            f" {statistics.median(cpu_ratios):.3f}× ({', '.join(f'{r:.2f}' for r in cpu_ratios)})"
        )


if __name__ == "__main__":
    main()
