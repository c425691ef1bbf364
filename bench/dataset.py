"""The data a run ingests and reads: the Synthea Bundles as they are, or multiplied NDJSON.

One :class:`Dataset` feeds every path under test the same resources: ``healthmesh load``
(files), HTTP transactions (Bundles) and the raw COPY baseline (``(id, json)`` rows).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.multiply import multiply, sample_path
from healthmesh.fhir.references import rewrite_references
from healthmesh.load.loader import stable_id

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA_DIR = ROOT.parent / "shared" / "data" / "synthea" / "R4"
SAMPLE_SCALE = 24  # 24 x 1,280 = 30,720 resources, about the size of the Synthea set
HTTP_BUNDLE_MIN = 200  # NDJSON -> Bundles: a new Bundle at a Patient once this many are in


@dataclass(slots=True)
class Dataset:
    label: str
    kind: str  # "bundles" (transaction Bundle files) or "ndjson" (.ndjson.gz files)
    root: Path  # what `healthmesh load` is given
    files: list[Path]
    resources: int
    work: Path
    _bundles: list[tuple[Path, int]] | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "files": len(self.files),
            "resources": self.resources,
            "bytes": sum(f.stat().st_size for f in self.files),
        }

    # --- HTTP transactions -------------------------------------------------------------------
    def http_bundles(self) -> list[tuple[Path, int]]:
        """Transaction Bundle files and their entry counts, made once for NDJSON sets."""
        if self._bundles is None:
            if self.kind == "bundles":
                self._bundles = [(f, _entries(f)) for f in self.files]
            else:
                self._bundles = _ndjson_to_bundles(self.files, self.work / "bundles")
        return self._bundles

    # --- the raw baseline --------------------------------------------------------------------
    def baseline_rows(self) -> Iterator[tuple[str, str]]:
        """``(key, json)`` for every resource, keys unique as the loader's ids are."""
        if self.kind == "bundles":
            for path in self.files:
                bundle = orjson.loads(path.read_bytes())
                for i, entry in enumerate(bundle.get("entry", [])):
                    resource = entry["resource"]
                    key = stable_id(path.name, entry.get("fullUrl") or f"entry {i}")
                    yield f"{resource['resourceType']}/{key}", orjson.dumps(resource).decode()
        else:
            for path in self.files:
                with gzip.open(path, "rb") as stream:
                    for line in stream:
                        resource = orjson.loads(line)
                        yield (
                            f"{resource['resourceType']}/{resource['id']}",
                            orjson.dumps(resource).decode(),
                        )


def _entries(path: Path) -> int:
    return len(orjson.loads(path.read_bytes()).get("entry", []))


def _ndjson_to_bundles(files: list[Path], out: Path) -> list[tuple[Path, int]]:
    """Cut NDJSON into transaction Bundles of whole patients (POST entries, urn:uuid fullUrls).

    References to resources in the same Bundle become urn:uuid ones and so follow the ids the
    server assigns; references to an earlier Bundle's resources (a shared Organization) stay
    ``Type/id`` and point at the id the resource had in the NDJSON.
    """
    out.mkdir(parents=True, exist_ok=True)
    made: list[tuple[Path, int]] = []
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        if not chunk:
            return
        urls = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in chunk}
        entries = []
        for r in chunk:
            rewrite_references(r, urls.get)
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{r['id']}",
                    "resource": r,
                    "request": {"method": "POST", "url": r["resourceType"]},
                }
            )
        path = out / f"bundle-{len(made):06d}.json"
        path.write_bytes(
            orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        )
        made.append((path, len(entries)))
        chunk.clear()

    for f in files:
        with gzip.open(f, "rb") as stream:
            for line in stream:
                resource = orjson.loads(line)
                if resource["resourceType"] == "Patient" and len(chunk) >= HTTP_BUNDLE_MIN:
                    flush()
                chunk.append(resource)
    flush()
    return made


def open_dataset(choice: str, scale: int | None, work: Path, synthea_dir: Path) -> Dataset:
    """``auto``: Synthea as it is when present (multiplied when scale > 1), else the sample."""
    if choice == "auto":
        choice = "synthea" if synthea_dir.is_dir() else "sample"
    if choice == "synthea":
        if not synthea_dir.is_dir():
            raise FileNotFoundError(synthea_dir)
        if scale is None or scale == 1:
            files = sorted(synthea_dir.glob("*.json"))
            count = sum(_entries(f) for f in files)
            return Dataset(
                f"Synthea R4 ({len(files)} Bundles)", "bundles", synthea_dir, files, count, work
            )
        made = multiply(work / "ndjson", clones=scale, source=synthea_dir)
        return Dataset(
            f"Synthea R4 x{scale} (multiplied NDJSON)",
            "ndjson",
            work / "ndjson",
            made.files,
            made.resources,
            work,
        )
    if choice == "sample":
        clones = scale or SAMPLE_SCALE
        made = multiply(work / "ndjson", clones=clones, source=sample_path())
        return Dataset(
            f"bundled sample x{clones} (multiplied NDJSON)",
            "ndjson",
            work / "ndjson",
            made.files,
            made.resources,
            work,
        )
    raise ValueError(f"unknown dataset {choice!r}")
