"""The loader's CPU stage, run in worker processes: from a file to versions ready to write.

Parsing, validation, reference rewriting, serialisation and index extraction take most of a
load's time and need no database, so they run in a process pool beside the process that
writes (and PostgreSQL, on the other cores). A Bundle whose processing needs the database —
conditional creates or references, updates, deletes — is handed back to be run as an
ordinary transaction instead.
"""

from __future__ import annotations

import gc
import gzip
import io
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from healthmesh.fhir.errors import FhirError, Issue
from healthmesh.fhir.ids import is_valid_id
from healthmesh.fhir.references import rewrite_references
from healthmesh.fhir.validation import check_resource
from healthmesh.store.copy_rows import EncodedBatch, EncodedVersion, encode
from healthmesh.store.rows import prepare

NAMESPACE = uuid.UUID("6f1c2a52-7d1e-4a0b-9a41-3e5f0c6d8b10")  # HealthMesh loader ids


# PostgreSQL text cannot hold U+0000: refused as the server refuses it (fhir/jsonio.py).
NUL = b"\\u0000"
NUL_REASON = "contains a NUL character (\\u0000), which cannot be stored"


def start_worker() -> None:
    """Set a worker process up for preparing (the process pool's initializer).

    A unit allocates hundreds of thousands of short-lived, acyclic objects (parsed JSON,
    FHIRPath nodes, index rows) that reference counting frees; the cyclic collector's
    default thresholds would still run it every 700 allocations, each full pass re-walking the
    definitions and compiled paths the worker keeps for good (~5 % of a worker's time on the
    Synthea set). So those are frozen out of collection and collections made rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


@dataclass(slots=True)
class Problem:
    where: str  # "entry 12", "line 40", or "" for the whole file
    reason: str


@dataclass(slots=True)
class Prepared:
    """What a worker hands back for one unit of writing (a Bundle or an NDJSON chunk)."""

    batch: EncodedBatch | None = None  # the versions to write, as COPY data
    problems: list[Problem] = field(default_factory=list)
    nbytes: int = 0
    at: datetime | None = None  # meta.lastUpdated of its versions
    fallback: bool = False  # needs the database while processing: run as a transaction
    failed: bool = False  # the whole unit is refused (a transaction with a bad entry)


def first_error(error: FhirError) -> str:
    issue = error.issues[0] if error.issues else None
    if issue is None:
        return str(error)
    return f"{issue.expression}: {issue.diagnostics}" if issue.expression else issue.diagnostics


def bundle_key(bundle: dict[str, Any], path: Path) -> str:
    identifier = bundle.get("identifier")
    if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
        return f"{identifier.get('system', '')}|{identifier['value']}"
    if isinstance(bundle.get("id"), str):
        return f"Bundle/{bundle['id']}"
    return path.name


def _simple_creates(bundle: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The entries when every one is a plain create (POST without ifNoneExist), else None."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            return None
        request = entry.get("request")
        if bundle.get("type") == "collection":
            continue
        if (
            not isinstance(request, dict)
            or request.get("method") != "POST"
            or request.get("ifNoneExist")
        ):
            return None
        if request.get("url") != entry["resource"].get("resourceType"):
            return None
    return entries


def prepare_bundle(path: Path, at: datetime) -> Prepared:
    raw = path.read_bytes()
    out = Prepared(nbytes=len(raw), at=at)
    if NUL in raw:
        out.problems.append(Problem("", NUL_REASON))
        out.failed = True
        return out
    try:
        bundle = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        out.problems.append(Problem("", f"not JSON: {exc}"))
        out.failed = True
        return out
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        out.problems.append(Problem("", "not a FHIR Bundle"))
        out.failed = True
        return out
    entries = (
        _simple_creates(bundle)
        if bundle.get("type") in ("transaction", "batch", "collection")
        else None
    )
    if entries is None:
        out.fallback = True
        return out
    key = bundle_key(bundle, path)
    ids: dict[str, str] = {}
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        res_type = resource.get("resourceType")
        full_url = entry.get("fullUrl")
        if bundle.get("type") == "collection" and isinstance(resource.get("id"), str):
            new_id = resource["id"]  # a collection keeps its resources' ids
        else:
            new_id = stable_id(key, full_url if isinstance(full_url, str) else f"entry {index}")
        if isinstance(full_url, str):
            if full_url in ids:
                out.problems.append(
                    Problem(
                        f"entry {index}", f"fullUrl '{full_url}' appears in more than one entry"
                    )
                )
                out.failed = True
                return out
            ids[full_url] = f"{res_type}/{new_id}"
        resource["id"] = new_id
    versions: list[EncodedVersion] = []
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        try:
            _rewrite(resource, ids)
            check_resource(resource)
            # prepare refuses e.g. a Consent whose provisions cannot be enforced.
            versions.append(encode(prepare(resource, version_id=1, last_updated=at)))
        except FhirError as error:
            out.problems.append(Problem(f"entry {index}", first_error(error)))
            out.failed = True  # one bad entry: the Bundle is refused whole, like a transaction
            return out
    out.batch = EncodedBatch.of(versions)
    return out


def _rewrite(resource: dict[str, Any], ids: dict[str, str]) -> None:
    def target(reference: str) -> str | None:
        if reference in ids:
            return ids[reference]
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            raise FhirError([_missing(reference)], 400)
        return None

    rewrite_references(resource, target)


def _missing(reference: str) -> Issue:
    return Issue(
        diagnostics=f"Reference '{reference}' names no entry's fullUrl in this Bundle",
        expression="reference",
    )


def open_input(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


def prepare_lines(name: str, first: int, lines: list[bytes], at: datetime) -> Prepared:
    """A chunk of NDJSON lines, numbered from ``first``; each bad line is reported and skipped."""
    out = Prepared(at=at)
    versions: list[EncodedVersion] = []
    seen: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines, start=first):
        out.nbytes += len(line)
        if not line.strip():
            continue
        if NUL in line:
            out.problems.append(Problem(f"line {number}", NUL_REASON))
            continue
        try:
            resource = orjson.loads(line)
            check_resource(resource)
            id = resource.get("id")
            if not (isinstance(id, str) and is_valid_id(id)):
                id = resource["id"] = stable_id(name, str(number))
            key = (resource["resourceType"], id)
            version = encode(prepare(resource, version_id=1, last_updated=at))
        except orjson.JSONDecodeError as exc:
            out.problems.append(Problem(f"line {number}", f"not JSON: {exc}"))
            continue
        except FhirError as error:
            out.problems.append(Problem(f"line {number}", first_error(error)))
            continue
        if key in seen:  # the same resource twice in one chunk: the later line wins
            versions[seen[key]] = version
        else:
            seen[key] = len(versions)
            versions.append(version)
    out.batch = EncodedBatch.of(versions)
    return out
