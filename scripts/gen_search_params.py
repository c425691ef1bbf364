"""Generate the compact search-parameter registry and Patient compartment shipped in the package.

Reads the R4 4.0.1 SearchParameter bundle, US Core's additional SearchParameters and the
Patient CompartmentDefinition from ../shared/data/fhir/ (or the folder given as argv[1]) and
writes src/healthmesh/fhir/data/{search-parameters,compartment-patient}.json.gz, so the
server never needs ../shared at run time.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/healthmesh/fhir/data"
KEEP = (
    "url",
    "code",
    "base",
    "type",
    "expression",
    "target",
    "modifier",
    "comparator",
    "multipleOr",
    "multipleAnd",
    "chain",
)


def compact(sp: dict[str, Any], source: str) -> dict[str, Any]:
    out = {k: sp[k] for k in KEEP if k in sp}
    if "component" in sp:
        out["component"] = [
            {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
        ]
    out["source"] = source
    return out


def write(name: str, data: Any) -> None:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    # mtime=0 keeps the output byte-for-byte reproducible.
    (OUT / name).write_bytes(gzip.compress(raw, 9, mtime=0))
    print(f"{name}: {len(raw):,} bytes, {(OUT / name).stat().st_size:,} gzipped")


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/fhir"
    core = json.loads((src / "search-parameters.json").read_text())
    uscore = json.loads((src / "search-parameters-uscore.json").read_text())
    params = [compact(e["resource"], "R4") for e in core["entry"]]
    params += [compact(e["resource"], "US Core 5.0.1") for e in uscore["entry"]]
    params.sort(key=lambda p: (p["source"], p["url"]))
    write("search-parameters.json.gz", params)
    cd = json.loads((src / "compartmentdefinition-patient.json").read_text())
    write(
        "compartment-patient.json.gz",
        {r["code"]: r.get("param", []) for r in cd["resource"]},
    )
    write("summary-elements.json.gz", summary_elements(src))


def summary_elements(src: Path) -> dict[str, dict[str, list[str]]]:
    """Per resource type, the top-level elements marked isSummary and those with min >= 1.

    _summary=true keeps the first, _summary=text and _elements keep the second
    (R4 search.html#summary, #elements).
    """
    profiles = json.loads((src / "profiles-resources.json").read_text())
    table: dict[str, dict[str, list[str]]] = {}
    for entry in profiles["entry"]:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource":
            continue
        if sd.get("abstract") or sd.get("derivation") != "specialization":
            continue
        name = sd["type"]
        summary, required = [], []
        for element in sd["snapshot"]["element"]:
            parts = element["path"].split(".")
            if len(parts) != 2:
                continue
            key = parts[1].removesuffix("[x]")
            if element.get("isSummary"):
                summary.append(key)
            if element.get("min", 0) >= 1:
                required.append(key)
        table[name] = {"summary": summary, "required": required}
    return table


if __name__ == "__main__":
    main()
