"""What recording one read's AuditEvent costs, piece by piece, in process (no HTTP).

    python -m bench.audit_cost --database-url URL [--events 2000]

- the server's CPU, quiet, per event: building it (privacy/audit.py), preparing it
  (chain.prepare_events: serialised, hashed, indexed, as the writer's rows), both at once
  from the caller's template (privacy/read_events.py), and the writer's JSON document
  (store/audit_store.py) per event of a batch of 4;
- PostgreSQL's backend CPU (from /proc, so PostgreSQL must run on this machine) of
  ``audit_record`` per event and per batch, for batches of 1, 4, 16 and 64 events; of
  ``SELECT 1``, a bare one-row insert and commit, and the chain head's lock and commit beside
  it; and of batches of 1 and 4 whose document leaves tables out (what each part costs).

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
            batches = [_batch(size) for _ in range(max(n // size, 20))]
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
        for name, statement in (
            ("SELECT 1", "SELECT 1"),
            ("a bare one-row insert and commit", "INSERT INTO bench_one (v) VALUES ('x')"),
            ("locking the chain head and commit", "SELECT audit_append('[]'::jsonb)"),
        ):
            before = _backend_cpu(pid)
            for _ in range(n):
                await conn.execute(statement)
            cpu = _backend_cpu(pid) - before
            print(f"  {name}: backend {cpu / n * 1e6:6.0f} µs")
        await document_parts(conn, pid, max(n // 4, 100))


# audit_record's document without some of its tables: what each part of a batch costs.
# The chain then names events that are not stored (verify says so): a scratch database.
Doc = dict[str, Any]
PARTS: dict[str, Callable[[Doc], Doc]] = {
    "everything": lambda d: d,
    "without the search table rows (patient, date)": lambda d: {
        k: v for k, v in d.items() if not k.startswith("search_")
    },
    "without those and the packed row": lambda d: {
        k: v for k, v in d.items() if not k.startswith("search_") and k != "audit_index"
    },
    "the chain entries alone": lambda d: {"resource": [], "entries": d["entries"]},
}


async def document_parts(conn: psycopg.AsyncConnection[Any], pid: int, n: int) -> None:
    for size in (1, 4):
        for name, part in PARTS.items():
            docs = [
                orjson.dumps(part(orjson.loads(_document(_batch(size)))), default=str).decode()
                for _ in range(n + 5)
            ]
            for doc in docs[:5]:
                await conn.execute("SELECT last_seq FROM audit_record(%s::jsonb)", (doc,))
            before = _backend_cpu(pid)
            for doc in docs[5:]:
                await conn.execute("SELECT last_seq FROM audit_record(%s::jsonb)", (doc,))
            cpu = _backend_cpu(pid) - before
            print(f"  audit_record of {size}, {name}: backend {cpu / n * 1e6:6.0f} µs a batch")


def _batch(size: int) -> chain.Prepared:
    return chain.Prepared.joined([_template() for _ in range(size)])


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
