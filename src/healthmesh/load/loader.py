"""``healthmesh load``: FHIR Bundles and NDJSON into the store, streaming and idempotent.

- Worker processes do the CPU work (load/prepare.py): parse, validate, rewrite references,
  serialise, extract index rows. This process writes what they prepare, one database
  transaction per Bundle or NDJSON chunk, with COPY. A bounded number of units is in flight,
  so memory does not grow with the input.
- Bundles (transaction, batch, collection) are all-or-nothing, like ``POST [base]``; one
  whose processing needs the database (conditional creates or references, updates, deletes)
  runs through the ordinary transaction code instead.
- Idempotent: a POST entry gets an id derived from its Bundle and fullUrl (uuid5), an
  NDJSON resource keeps its own id, and a write whose content equals the stored version makes
  no new version. Loading the same input twice leaves the same data.
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg

from healthmesh.fhir.errors import FhirError, InvalidRequest
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.relabel import labels_current, record_digest
from healthmesh.interactions.transaction import parse_entries, run_transaction
from healthmesh.load.ordering import WriteOrder
from healthmesh.load.prepare import (
    Prepared,
    bundle_key,
    first_error,
    open_input,
    prepare_bundle,
    prepare_lines,
    stable_id,
    start_worker,
)
from healthmesh.store.repository import Repository, Session, StoredVersion
from healthmesh.store.rows import now, prepare

CHUNK = 1000  # NDJSON resources per database transaction
SUFFIXES = (".json", ".ndjson", ".ndjson.gz", ".json.gz")

__all__ = ["LoadError", "LoadReport", "Loader", "find_inputs", "stable_id"]


class Progress(Protocol):
    def advance(self, resources: int, nbytes: int) -> None: ...


@dataclass(slots=True)
class LoadError:
    file: str
    entry: str  # "entry 12", "line 40", or "" for the whole file
    reason: str


@dataclass(slots=True)
class LoadReport:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    errors: list[LoadError] = field(default_factory=list)

    @property
    def resources(self) -> int:
        return (
            sum(self.created.values()) + sum(self.updated.values()) + sum(self.unchanged.values())
        )

    def count(self, result: FhirResult) -> None:
        version = result.version
        if version is None:
            return
        if result.unchanged:
            self.unchanged[version.res_type] += 1
        elif result.status == 201:
            self.created[version.res_type] += 1
        else:
            self.updated[version.res_type] += 1


def find_inputs(paths: list[Path]) -> list[Path]:
    """Files to load, folders searched recursively, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(path)
    return found


async def write_versions(session: Session, prepared: Prepared) -> list[FhirResult]:
    """Upsert a unit's versions: new ids by COPY, changed ones as new versions, same ones skipped."""
    batch = prepared.batch
    if batch is None:
        return []
    at = prepared.at or now()
    existing = await session.current_many(batch.keys)
    fresh: list[int] = []
    results: list[FhirResult] = []
    for n, (res_type, id) in enumerate(batch.keys):
        current = existing.get((res_type, id)) if existing else None
        if current is None:
            fresh.append(n)
            results.append(FhirResult(status=201, version=_stored(res_type, id, 1, at)))
            continue
        if not current.deleted and current.content_hash == batch.hashes[n]:
            results.append(FhirResult(status=200, version=current, unchanged=True))
            continue
        # Rare: a changed resource. Its content carries versionId 1; stamp the real one.
        again = prepare(
            orjson.loads(batch.content(n)), version_id=current.version_id + 1, last_updated=at
        )
        await session.replace(again)
        results.append(
            FhirResult(
                status=201 if current.deleted else 200,
                version=_stored(again.res_type, again.id, again.version_id, at),
            )
        )
    await session.insert_encoded(batch.pick(fresh))
    return results


def _stored(res_type: str, id: str, version_id: int, at: datetime) -> StoredVersion:
    return StoredVersion(res_type, id, version_id, at, False, None)


def _entry_of(error: FhirError) -> str:
    for issue in error.issues:
        if issue.expression and issue.expression.startswith("Bundle.entry["):
            return "entry " + issue.expression[len("Bundle.entry[") :].split("]", 1)[0]
    return ""


@dataclass(slots=True)
class _Unit:
    """One database transaction's worth of input, being prepared by a worker."""

    path: Path
    future: Awaitable[Prepared]
    seq: int = 0  # its place in the input (load/ordering.py)
    prepared: Prepared | None = None


class Loader:
    def __init__(self, repository: Repository, *, base: str = "", progress: Progress | None = None):
        self.repository = repository
        self.request = FhirRequest(method="POST", path=(), base=base)
        self.progress = progress
        self.report = LoadReport()

    async def load(self, files: list[Path], *, workers: int = 2, writers: int = 2) -> LoadReport:
        """Load ``files`` with ``workers`` processes preparing and ``writers`` connections
        writing (the repository's pool needs that many)."""
        # Everything written here is labelled with the current rules (store/rows.py); when
        # that was true of the store before, it stays true, and saying so spares the next
        # `serve` a relabelling sweep over everything (interactions/relabel.py).
        vouch = await labels_current(self.repository)
        # spawn, not fork: the children must not inherit this process's open connections.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=max(1, workers), mp_context=context, initializer=start_worker
        ) as pool:
            deferred = await self._pipeline(
                files, pool, in_flight=max(2, workers * 2), writers=max(1, writers)
            )
        # A unit that met a concurrent writer's rows, or a Bundle whose conditional
        # references name resources from a later file, gets one more try once everything
        # else is in.
        for unit in deferred:
            if unit.prepared is None:
                await self._fallback(unit.path, last_try=True)
            elif not await self._write_prepared(unit.path, unit.prepared):
                self.report.errors.append(
                    LoadError(str(unit.path), "", "a concurrent writer kept changing its resources")
                )
        if vouch:
            await record_digest(self.repository)
        if self.report.created or self.report.updated:
            await self._analyze(writers)
        return self.report

    async def _analyze(self, connections: int) -> None:
        """ANALYZE every table written to, largest first, on up to ``connections`` at once:
        each table's statistics are one backend's work."""
        async with self.repository.session(write=False) as session:
            tables = await session.tables_by_size()
        limit = asyncio.Semaphore(max(1, connections))

        async def one(table: str) -> None:
            async with limit, self.repository.session(write=False) as session:
                await session.analyze([table])

        async with asyncio.TaskGroup() as group:
            for table in tables:
                group.create_task(one(table))

    async def _pipeline(
        self, files: list[Path], pool: Executor, *, in_flight: int, writers: int
    ) -> list[_Unit]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Unit | None] = asyncio.Queue(maxsize=in_flight)
        order = WriteOrder()
        deferred: list[_Unit] = []

        async def submit(path: Path, fn: Callable[..., Prepared], *args: Any) -> None:
            unit = _Unit(path, loop.run_in_executor(pool, fn, *args), order.enter())
            await queue.put(unit)

        async def read() -> None:
            for path in files:
                if ".ndjson" in path.name:
                    try:
                        async for first, lines in _chunks(path):
                            await submit(path, prepare_lines, path.name, first, lines, now())
                    except (OSError, EOFError, gzip.BadGzipFile) as exc:
                        self.report.errors.append(LoadError(str(path), "", f"cannot read: {exc}"))
                else:
                    await submit(path, prepare_bundle, path, now())
            for _ in range(writers):
                await queue.put(None)

        async def write() -> None:
            while (unit := await queue.get()) is not None:
                try:
                    if not await self._write(unit, order):
                        deferred.append(unit)
                finally:
                    order.leave(unit.seq)

        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            for _ in range(writers):
                group.create_task(write())
        return sorted(deferred, key=lambda unit: unit.seq)

    async def _write(self, unit: _Unit, order: WriteOrder) -> bool:
        """Write one prepared unit in its turn; False when it should be retried at the end."""
        try:
            prepared = await unit.future
        except OSError as exc:
            self.report.errors.append(LoadError(str(unit.path), "", f"cannot read: {exc}"))
            return True
        for problem in prepared.problems:
            self.report.errors.append(LoadError(str(unit.path), problem.where, problem.reason))
        if prepared.fallback:
            order.declare(unit.seq, (), barrier=True)
            await order.wait_turn(unit.seq)
            return await self._fallback(unit.path, last_try=False)
        if prepared.failed or not prepared.batch:
            return True
        order.declare(unit.seq, prepared.batch.keys)
        await order.wait_turn(unit.seq)
        unit.prepared = prepared
        return await self._write_prepared(unit.path, prepared)

    async def _write_prepared(self, path: Path, prepared: Prepared) -> bool:
        try:
            async with self.repository.session() as session:
                results = await write_versions(session, prepared)
        except psycopg.errors.IntegrityError:
            return False  # another writer made the same id meanwhile: the retry sees its row
        except psycopg.errors.DataError as exc:
            # A value PostgreSQL cannot store; the unit's transaction stored nothing.
            reason = str(exc).splitlines()[0]
            self.report.errors.append(LoadError(str(path), "", f"refused by PostgreSQL: {reason}"))
            return True
        for result in results:
            self.report.count(result)
        if self.progress:
            self.progress.advance(len(results), prepared.nbytes)
        return True

    async def _fallback(self, path: Path, *, last_try: bool) -> bool:
        """A Bundle that needs the database while it is processed: the transaction code path."""
        raw = await asyncio.to_thread(path.read_bytes)
        bundle = orjson.loads(raw)
        try:
            entries = parse_entries(_as_transaction(bundle), self.request.base)
            key = bundle_key(bundle, path)
            for e in entries:
                if e.method == "POST" and not e.if_none_exist:
                    e.assigned_id = stable_id(key, e.full_url or f"entry {e.index}")
            results = await run_transaction(self.repository, entries, self.request, upsert=True)
        except FhirError as error:
            if error.status == 412 and not last_try:
                return False
            self.report.errors.append(LoadError(str(path), _entry_of(error), first_error(error)))
            return True
        for result in results.values():
            self.report.count(result)
        if self.progress:
            self.progress.advance(len(results), len(raw))
        return True


def _as_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    kind = bundle.get("type")
    if kind in ("transaction", "batch"):
        return bundle
    if kind != "collection":
        raise InvalidRequest(
            f"Bundle.type {kind!r} cannot be loaded; use transaction, batch or collection",
            expression="Bundle.type",
        )
    entries = []
    for raw in bundle.get("entry", []):
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            entries.append(raw)  # parse_entries reports it with its index
            continue
        entries.append(
            {
                "fullUrl": raw.get("fullUrl")
                or f"{resource['resourceType']}/{resource.get('id', '')}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def _chunks(path: Path) -> AsyncIterator[tuple[int, list[bytes]]]:
    """(first line number, lines) of CHUNK lines at a time, read as it goes."""
    stream = open_input(path)
    try:
        first, lines = 1, []
        for number, line in enumerate(stream, start=1):
            lines.append(line)
            if len(lines) >= CHUNK:
                yield first, lines
                first, lines = number + 1, []
        if lines:
            yield first, lines
    finally:
        stream.close()
