"""Build the demo sample shipped in the package: a few Synthea patients as gzipped NDJSON.

Each transaction Bundle's urn:uuid references are rewritten to ``Type/id`` with the same
stable ids ``healthmesh load`` would give them, so the sample is self-contained NDJSON that a
fresh clone can load without ../shared. Usage: make_sample.py [SYNTHEA_DIR] [N]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import orjson

from healthmesh.fhir.references import rewrite_references
from healthmesh.load.loader import stable_id

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/healthmesh/load/sample/synthea-sample.ndjson.gz"


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/synthea/R4"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    patients = sorted(p for p in src.glob("*.json") if "Information" not in p.name)
    # Mid-sized records: rich enough to show, small enough to ship.
    chosen = sorted(patients, key=lambda p: p.stat().st_size)[len(patients) // 2 :][:count]
    lines: list[bytes] = []
    for path in chosen:
        bundle: dict[str, Any] = orjson.loads(path.read_bytes())
        ids = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{stable_id(path.name, e['fullUrl'])}"
            for e in bundle["entry"]
        }
        for e in bundle["entry"]:
            resource = e["resource"]
            resource["id"] = ids[e["fullUrl"]].split("/", 1)[1]
            rewrite_references(resource, ids.get)
            lines.append(orjson.dumps(resource))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", 9, mtime=0))
    print(
        f"{OUT.name}: {len(lines)} resources from {len(chosen)} patients, {OUT.stat().st_size:,} bytes"
    )


if __name__ == "__main__":
    main()
