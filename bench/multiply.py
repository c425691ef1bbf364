"""Clone a FHIR data set to any size: fresh ids and identifiers, references kept consistent.

    python -m bench.multiply --out DIR --resources 1000000 [--source PATH]

The source is the bundled Synthea sample (NDJSON) by default, or any NDJSON file or folder of
transaction Bundles (such as ../shared/data/synthea/R4, whose urn:uuid references are first
turned into ``Type/id``). Clone *k* of the source gets a clone tag of eight hex digits: every
UUID anywhere in a resource (ids, references, UUID identifiers) gets the tag as its first
eight digits, and every other ``identifier.value`` gets ``-TAG`` appended. The same source
UUID becomes the same new UUID throughout one clone, so references stay consistent, and no
two clones share an id or identifier.

Each source resource is turned once into a template (its JSON split at the places the tag
goes), so a clone is a ``bytes.join`` per resource: the output is written as fast as gzip
compresses it. Memory holds the templates (about the size of the source) and one output
buffer, whatever the output size. Output: ``part-00000.ndjson.gz`` … in ``--out``, clone after
clone, each file ``--per-file`` resources at most.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import orjson

from healthmesh.fhir.references import rewrite_references

MARK = "\u27e6clone\u27e7"  # where the clone tag goes; never in FHIR data
_MARK = MARK.encode()
_UUID_PREFIX = re.compile(
    rb"(?<![0-9a-fA-F])[0-9a-fA-F]{8}(?=-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9a-fA-F]))"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_SUFFIX = re.compile(
    rb"(?<![0-9a-fA-F])[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![0-9a-fA-F])"
)
DEFAULT_SEED = 0xC10E0000


def sample_path() -> Path:
    """The Synthea sample shipped with the package."""
    return Path(
        str(resources.files("healthmesh.load").joinpath("sample", "synthea-sample.ndjson.gz"))
    )


# --- reading a source ----------------------------------------------------------------------


def _ndjson(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as stream:
        for line in stream:
            if line.strip():
                yield orjson.loads(line)


def _bundles(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Transaction Bundles as resources with ``Type/id`` references, each (type, id) once."""
    where: dict[str, str] = {}
    for path in paths:  # first pass: fullUrl -> Type/id across all Bundles (tens of bytes each)
        for entry in orjson.loads(path.read_bytes()).get("entry", []):
            resource = entry.get("resource") or {}
            if entry.get("fullUrl") and resource.get("id"):
                where[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
    seen: set[str] = set()
    for path in paths:
        for entry in orjson.loads(path.read_bytes()).get("entry", []):
            resource = entry.get("resource")
            if not isinstance(resource, dict) or not resource.get("id"):
                continue
            key = f"{resource['resourceType']}/{resource['id']}"
            if key in seen:  # Synthea repeats Organizations and Practitioners per patient
                continue
            seen.add(key)
            rewrite_references(resource, where.get)
            yield resource


def read_source(source: Path) -> Iterator[dict[str, Any]]:
    if source.is_dir():
        ndjson = sorted(p for p in source.rglob("*") if ".ndjson" in p.name)
        if ndjson:
            for p in ndjson:
                yield from _ndjson(p)
        else:
            yield from _bundles(sorted(source.rglob("*.json")))
    elif ".ndjson" in source.name:
        yield from _ndjson(source)
    else:
        yield from _bundles([source])


# --- templates -----------------------------------------------------------------------------


def _mark_identifiers(node: Any) -> None:
    """identifier.value without a UUID gets ``-MARK`` (a UUID one changes with its prefix)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "identifier":
                for ident in value if isinstance(value, list) else [value]:
                    if isinstance(ident, dict):
                        v = ident.get("value")
                        if isinstance(v, str) and not _UUID.search(v):
                            ident["value"] = f"{v}-{MARK}"
            if isinstance(value, dict | list):
                _mark_identifiers(value)
    elif isinstance(node, list):
        for item in node:
            _mark_identifiers(item)


def template(resource: dict[str, Any]) -> list[bytes]:
    """The resource's JSON cut where the clone tag goes: ``tag.join(parts)`` is the clone."""
    _mark_identifiers(resource)
    raw = orjson.dumps(resource)
    return _UUID_PREFIX.sub(_MARK, raw).split(_MARK)


@dataclass(slots=True)
class Source:
    templates: list[list[bytes]]
    types: dict[str, int]

    @property
    def size(self) -> int:
        return len(self.templates)


PROVENANCE_NAMESPACE = UUID("5b0c7d52-6c1e-4f43-9a55-3e1f3f8d1a10")


def with_provenance(resources: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The resources, then one Provenance per Patient targeting the Patient and its Encounters.

    Synthea writes a Provenance per patient Bundle, but the shared sets have them stripped;
    the search benchmark needs some for ``_revinclude=Provenance:target``. Its id is a UUID
    (so clones get fresh ones), derived from the Patient's id; the author is the first
    Encounter's serviceProvider (or the Patient), ``recorded`` the latest Encounter start.
    """
    encounters: dict[str, list[dict[str, Any]]] = {}
    patients: list[str] = []
    for resource in resources:
        if resource["resourceType"] == "Patient":
            patients.append(resource["id"])
        elif resource["resourceType"] == "Encounter":
            subject = (resource.get("subject") or {}).get("reference", "")
            if subject.startswith("Patient/"):
                encounters.setdefault(subject.removeprefix("Patient/"), []).append(resource)
        yield resource
    for pid in patients:
        own = encounters.get(pid, [])
        starts = [e["period"]["start"] for e in own if "start" in e.get("period", {})]
        author = next(
            (e["serviceProvider"] for e in own if "reference" in e.get("serviceProvider", {})),
            {"reference": f"Patient/{pid}"},
        )
        yield {
            "resourceType": "Provenance",
            "id": str(uuid5(PROVENANCE_NAMESPACE, pid)),
            "target": [{"reference": f"Patient/{pid}"}]
            + [{"reference": f"Encounter/{e['id']}"} for e in own],
            "recorded": max(starts) if starts else "2020-01-01T00:00:00+00:00",
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "author",
                            }
                        ]
                    },
                    "who": {"reference": author["reference"]},
                }
            ],
        }


def load_source(source: Path, *, provenance: bool = False) -> Source:
    templates: list[list[bytes]] = []
    types: dict[str, int] = {}
    owners: dict[bytes, bytes] = {}  # UUID without its first 8 digits -> the whole UUID
    found = read_source(source)
    for resource in with_provenance(found) if provenance else found:
        types[resource["resourceType"]] = types.get(resource["resourceType"], 0) + 1
        raw = orjson.dumps(resource)
        for m in _UUID_SUFFIX.finditer(raw):
            whole = m.group(0).lower()
            seen = owners.setdefault(m.group(1).lower(), whole)
            if seen != whole:  # two UUIDs that differ only in the part the tag replaces
                raise ValueError(f"cannot clone: {seen!r} and {whole!r} share their last digits")
        templates.append(template(resource))
    if not templates:
        raise ValueError(f"no resources in {source}")
    return Source(templates, types)


def clone_tag(seed: int, clone: int) -> bytes:
    return f"{(seed + clone) & 0xFFFFFFFF:08x}".encode()


# --- writing -------------------------------------------------------------------------------


@dataclass(slots=True)
class Multiplied:
    files: list[Path]
    resources: int
    clones: int
    source_resources: int
    seconds: float
    bytes_written: int


def multiply(
    out: Path,
    *,
    resources_wanted: int | None = None,
    clones: int | None = None,
    source: Path | None = None,
    seed: int = DEFAULT_SEED,
    per_file: int = 250_000,
    level: int = 1,
    progress: bool = False,
    provenance: bool = False,
) -> Multiplied:
    """Write ``resources_wanted`` resources (or ``clones`` whole clones) of ``source`` to ``out``.

    The last clone is cut short when ``resources_wanted`` is not a multiple of the source size;
    its references to the resources left out then point nowhere.
    """
    started = time.perf_counter()
    src = load_source(source or sample_path(), provenance=provenance)
    if resources_wanted is None:
        resources_wanted = (clones or 1) * src.size
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.ndjson.gz"):
        old.unlink()
    files: list[Path] = []
    written = 0
    nbytes = 0
    stream: gzip.GzipFile | None = None
    in_file = 0
    buffer: list[bytes] = []
    clone = 0
    try:
        while written < resources_wanted:
            tag = clone_tag(seed, clone)
            for parts in src.templates:
                if written >= resources_wanted:
                    break
                if stream is None or in_file >= per_file:
                    if stream is not None:
                        stream.write(b"".join(buffer))
                        buffer.clear()
                        stream.close()
                    path = out / f"part-{len(files):05d}.ndjson.gz"
                    files.append(path)
                    stream = gzip.GzipFile(path, "wb", compresslevel=level, mtime=0)
                    in_file = 0
                line = tag.join(parts)
                buffer.append(line)
                buffer.append(b"\n")
                nbytes += len(line) + 1
                written += 1
                in_file += 1
                if len(buffer) >= 4096:
                    stream.write(b"".join(buffer))
                    buffer.clear()
            clone += 1
            if progress and clone % 50 == 0:
                print(f"  {written:,} resources ({clone} clones)", file=sys.stderr)
        if stream is not None and buffer:
            stream.write(b"".join(buffer))
    finally:
        if stream is not None:
            stream.close()
    return Multiplied(
        files=files,
        resources=written,
        clones=clone,
        source_resources=src.size,
        seconds=time.perf_counter() - started,
        bytes_written=nbytes,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.multiply",
        description="Clone a FHIR data set with fresh ids and identifiers into gzipped NDJSON.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--resources", type=int, help="resources to write (e.g. 1000000)")
    size.add_argument("--clones", type=int, help="whole copies of the source to write")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="NDJSON file, or a folder of NDJSON or transaction Bundles (default: bundled sample)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="first clone tag")
    parser.add_argument("--per-file", type=int, default=250_000, help="resources per file")
    parser.add_argument("--level", type=int, default=1, help="gzip level (1 fast .. 9 small)")
    parser.add_argument(
        "--provenance",
        action="store_true",
        help="add a Provenance per Patient (target: the Patient and its Encounters)",
    )
    args = parser.parse_args(argv)
    result = multiply(
        args.out,
        resources_wanted=args.resources,
        clones=args.clones,
        source=args.source,
        seed=args.seed,
        per_file=args.per_file,
        level=args.level,
        progress=True,
        provenance=args.provenance,
    )
    print(
        f"{result.resources:,} resources ({result.clones} clones of {result.source_resources:,})"
        f" in {len(result.files)} files, {result.bytes_written / 1e6:,.0f} MB of JSON,"
        f" {result.seconds:.1f} s ({result.resources / result.seconds:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
