"""What recording one read's AuditEvent costs, piece by piece, in process (no HTTP).

    python -m bench.audit_cost --database-url URL [--events 2000]

- the server's CPU, quiet, per event: building it (privacy/audit.py), preparing it
  (chain.prepare_events: serialised, hashed, indexed, as the writer's rows), both at once
  from the caller's template (privacy/read_events.py), and the writer's JSON document
  (store/audit_store.py) per event of a batch of 4;
- PostgreSQL's backend CPU (from /proc, so PostgreSQL must run on this machine) of
  ``audit_record`` per event and per batch, for batches of 1, 4, 16 and 64 events, and of a
  bare one-row insert and commit beside it.

It writes AuditEvents into the database's trail: give it a scratch database
(docs/PERFORMANCE.md, "Auditing on vs off").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg

from bench.common import check_local
from healthmesh.auth.grant import AccessGrant
from healthmesh.privacy import audit, chain, read_events

GRANT = AccessGrant(client_id="bench-audit-app", scope="patient/*.rs", patient="p1")
TOUCHED = [audit.Touched("Observation", "o1", "1", "p1")]


def _event() -> list[dict[str, Any]]:
    return audit.interaction_events(GRANT, "read", TOUCHED, audit.SUCCESS, address="127.0.0.1")


def _template() -> chain.Prepared:
    made = read_events.interaction_prepared(
        GRANT, "read", TOUCHED, audit.SUCCESS, address="127.0.0.1"
    )
    if made is None:
        raise SystemExit("the template path refused the benchmark's event")
    return made


def _document(prepared: chain.Prepared) -> str:
    """The writer's statement parameter, as audit_store.append makes it."""
    doc = {"resource": [], **prepared.tables, "entries": prepared.entries}
    return orjson.dumps(doc, default=str).decode()


def _per_call_us(f: Callable[[], object], n: int) -> float:
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e6


def server_side(n: int) -> None:
    events = _event()
    batch = chain.Prepared.joined([_template() for _ in range(4)])
    figures = {
        "build (audit.py)": _per_call_us(_event, n),
        "prepare (chain.prepare_events)": _per_call_us(lambda: chain.prepare_events(events), n),
        "template (read_events.py), both": _per_call_us(_template, n),
        "writer's document, per event of 4": _per_call_us(lambda: _document(batch), n) / 4,
    }
    for name, us in figures.items():
        print(f"  {name:40s} {us:7.1f} µs")


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def database_side(url: str, n: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        for size in (1, 4, 16, 64):
            batches = [
                chain.Prepared.joined([_template() for _ in range(size)])
                for _ in range(max(n // size, 20))
            ]
            await chain.append_prepared(conn, batches[0])  # plans, caches
            before, start = _backend_cpu(pid), time.perf_counter()
            for prepared in batches[1:]:
                await chain.append_prepared(conn, prepared)
            cpu, wall = _backend_cpu(pid) - before, time.perf_counter() - start
            count = len(batches) - 1
            print(
                f"  batches of {size:2d}: backend {cpu / count / size * 1e6:6.0f} µs an event,"
                f" {cpu / count * 1e6:6.0f} µs a batch; wall {wall / count * 1e6:6.0f} µs a batch"
            )
        await conn.execute("CREATE TEMP TABLE bench_one (id serial PRIMARY KEY, v text)")
        before = _backend_cpu(pid)
        for _ in range(n):
            await conn.execute("INSERT INTO bench_one (v) VALUES ('x')")
        cpu = _backend_cpu(pid) - before
        print(f"  a bare one-row insert and commit: backend {cpu / n * 1e6:6.0f} µs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args(argv)
    check_local(args.database_url)
    print(f"server side, quiet, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC:")
    server_side(args.events * 5)
    print("PostgreSQL's side (backend CPU):")
    asyncio.run(database_side(args.database_url, args.events))


if __name__ == "__main__":
    main()
