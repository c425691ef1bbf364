"""``healthmesh load``: FHIR Bundles and NDJSON into the store, streaming and idempotent.

- Bundles (transaction, batch, collection) run as one database transaction each, through the
  same code as ``POST [base]`` — validation, reference rewriting, processing order.
- NDJSON (``.ndjson``, ``.ndjson.gz``) is read line by line and written in chunks, so memory
  does not grow with the input: a file of any size streams through a few MB.
- Idempotent: a POST entry gets an id derived from its Bundle and fullUrl (uuid5) instead of
  a random one, an NDJSON resource keeps its own id, and a write whose content equals the
  stored version makes no new version. Loading the same input twice leaves the same data.
- Two workers run side by side so that Python's parsing and validation of one chunk overlaps
  PostgreSQL's writing of another.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg

from healthmesh.fhir.errors import FhirError, InvalidRequest
from healthmesh.fhir.validation import check_resource
from healthmesh.interactions.context import FhirRequest, FhirResult
from healthmesh.interactions.transaction import Entry, parse_entries, run_transaction
from healthmesh.store.repository import Repository

NAMESPACE = uuid.UUID("6f1c2a52-7d1e-4a0b-9a41-3e5f0c6d8b10")  # HealthMesh loader ids
CHUNK = 1000  # NDJSON resources per database transaction
SUFFIXES = (".json", ".ndjson", ".ndjson.gz", ".json.gz")


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


def _open(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


def _first_error(error: FhirError) -> str:
    issue = error.issues[0] if error.issues else None
    if issue is None:
        return str(error)
    return f"{issue.expression}: {issue.diagnostics}" if issue.expression else issue.diagnostics


class Loader:
    def __init__(self, repository: Repository, *, base: str = "", progress: Progress | None = None):
        self.repository = repository
        self.request = FhirRequest(method="POST", path=(), base=base)
        self.progress = progress
        self.report = LoadReport()

    async def load(self, files: list[Path], *, workers: int = 2) -> LoadReport:
        queue: asyncio.Queue[Path] = asyncio.Queue()
        for f in files:
            queue.put_nowait(f)
        deferred: list[Path] = []

        async def worker() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                if not await self.load_file(path, last_try=False):
                    deferred.append(path)

        await asyncio.gather(*(worker() for _ in range(workers)))
        # A Bundle whose conditional references name resources from a later file gets one
        # more try once everything else is in.
        for path in deferred:
            await self.load_file(path, last_try=True)
        return self.report

    async def load_file(self, path: Path, *, last_try: bool) -> bool:
        """Load one file; False when it should be retried after the others."""
        try:
            if ".ndjson" in path.name:
                await self._load_ndjson(path)
                return True
            return await self._load_bundle(path, last_try=last_try)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            self.report.errors.append(LoadError(str(path), "", f"cannot read: {exc}"))
            return True
        except psycopg.errors.IntegrityError:
            # Two workers wrote the same stable id at once: the retry sees the other's write.
            if last_try:
                raise
            return False

    async def _load_bundle(self, path: Path, *, last_try: bool) -> bool:
        raw = await asyncio.to_thread(path.read_bytes)
        try:
            bundle = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.report.errors.append(LoadError(str(path), "", f"not JSON: {exc}"))
            return True
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            self.report.errors.append(LoadError(str(path), "", "not a FHIR Bundle"))
            return True
        key = _bundle_key(bundle, path)
        try:
            entries = self._bundle_entries(bundle, key)
            results = await run_transaction(self.repository, entries, self.request, upsert=True)
        except FhirError as error:
            if error.status == 412 and not last_try:
                return False
            self.report.errors.append(LoadError(str(path), _entry_of(error), _first_error(error)))
            return True
        for result in results.values():
            self.report.count(result)
        if self.progress:
            self.progress.advance(len(results), len(raw))
        return True

    def _bundle_entries(self, bundle: dict[str, Any], key: str) -> list[Entry]:
        kind = bundle.get("type")
        if kind == "collection":
            bundle = _collection_as_transaction(bundle)
        elif kind not in ("transaction", "batch"):
            raise InvalidRequest(
                f"Bundle.type {kind!r} cannot be loaded; use transaction, batch or collection",
                expression="Bundle.type",
            )
        entries = parse_entries(bundle, self.request.base)
        for e in entries:
            if e.method == "POST" and not e.if_none_exist:
                e.assigned_id = stable_id(key, e.full_url or f"entry {e.index}")
        return entries

    async def _load_ndjson(self, path: Path) -> None:
        async for chunk, nbytes in _ndjson_chunks(path, self.report):
            try:
                results = await run_transaction(self.repository, chunk, self.request, upsert=True)
            except FhirError as error:
                where = _entry_of(error).replace("entry", "line")
                self.report.errors.append(LoadError(str(path), where, _first_error(error)))
                continue
            for result in results.values():
                self.report.count(result)
            if self.progress:
                self.progress.advance(len(results), nbytes)


def _entry_of(error: FhirError) -> str:
    for issue in error.issues:
        if issue.expression and issue.expression.startswith("Bundle.entry["):
            return "entry " + issue.expression[len("Bundle.entry[") :].split("]", 1)[0]
    return ""


def _bundle_key(bundle: dict[str, Any], path: Path) -> str:
    identifier = bundle.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        return f"{identifier.get('system', '')}|{identifier['value']}"
    if isinstance(bundle.get("id"), str):
        return f"Bundle/{bundle['id']}"
    return path.name


def _collection_as_transaction(bundle: dict[str, Any]) -> dict[str, Any]:
    """A collection's entries become creates (stable ids) so references resolve as in a transaction."""
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


async def _ndjson_chunks(path: Path, report: LoadReport) -> AsyncIterator[tuple[list[Entry], int]]:
    chunk: list[Entry] = []
    keys: set[tuple[str, str]] = set()
    nbytes = 0
    for number, line in _lines(path):
        nbytes += len(line)
        if not line.strip():
            continue
        try:
            resource = orjson.loads(line)
            check_resource(resource)
        except orjson.JSONDecodeError as exc:
            report.errors.append(LoadError(str(path), f"line {number}", f"not JSON: {exc}"))
            continue
        except FhirError as error:
            report.errors.append(LoadError(str(path), f"line {number}", _first_error(error)))
            continue
        res_type = resource["resourceType"]
        id = resource.get("id") or stable_id(str(path.name), str(number))
        if (res_type, id) in keys:  # the same resource again: write what came before first
            yield chunk, nbytes
            chunk, keys, nbytes = [], set(), 0
        keys.add((res_type, id))
        chunk.append(
            Entry(
                index=number,
                method="POST",
                path=(res_type,),
                params=[],
                full_url=f"{res_type}/{id}",
                resource=resource,
                if_none_exist=None,
                if_match=None,
                assigned_id=id,
                validated=True,
            )
        )
        if len(chunk) >= CHUNK:
            yield chunk, nbytes
            chunk, keys, nbytes = [], set(), 0
            await asyncio.sleep(0)  # let the other worker run
    if chunk:
        yield chunk, nbytes


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with _open(path) as stream:
        yield from enumerate(stream, start=1)
