"""Generate the compact R4 structure definitions shipped in the package.

Reads the R4 4.0.1 StructureDefinition bundles ``profiles-types.json`` and
``profiles-resources.json`` from ../shared/data/fhir/ (or the folder given as argv[1]) and
writes src/healthmesh/fhir/data/structure.json.gz, so neither the server nor the tests need
../shared at run time. The output is deterministic (sorted keys, gzip mtime 0).

Kept: the base R4 resource types and data types (kind resource / complex-type /
primitive-type with derivation specialization, plus the abstract roots Element, Resource and
DomainResource), one compact record per snapshot element. Skipped: constraint profiles
(SimpleQuantity and MoneyQuantity are recorded only as aliases of Quantity), logical models
(MetadataResource), and definitions from later FHIR versions that the source copy carries
(it is Medplum's curated copy, which adds R4B's SubscriptionStatus). Medplum's edits to the
R4 snapshots are undone with the differentials (see r4_elements).

Format (all keys short to keep the file small)::

    {"version": "4.0.1",
     "aliases": {"SimpleQuantity": "Quantity", ...},
     "types": {name: {"kind": "resource"|"complex-type"|"primitive-type",
                      "abstract": bool, "base": name|null,
                      # primitives only:
                      "json": "string"|"number"|"boolean", "regex": str|null,
                      # primitives: id, extension, value; other types: every element
                      "elements": [{"p": path, "n": min, "x": max, "t": [codes],
                                    "c": 1 (choice), "r": contentReference path,
                                    "g": [target type names], "a": 1 (XML attribute:
                                    Element.id / Extension.url, no _x extension sibling)}]}}}
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/healthmesh/fhir/data/structure.json.gz"
FHIR_VERSION = "4.0.1"
SD_BASE = "http://hl7.org/fhir/StructureDefinition/"
SYSTEM_PREFIX = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"

# R4 json.html#primitive: these primitives are JSON numbers / booleans, all others strings.
# (Taken from the spec rather than the value element's System type, because the source copy
# types positiveInt.value and unsignedInt.value as System.String.)
JSON_NUMBERS = frozenset({"integer", "decimal", "positiveInt", "unsignedInt"})
JSON_BOOLEANS = frozenset({"boolean"})

# When a System.* type carries no structuredefinition-fhir-type extension (xhtml.id).
SYSTEM_TO_FHIR = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}

# Constraint profiles on Quantity: elements typed with them are Quantity (R4 datatypes.html).
ALIASES = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}

# The differential keys that define an element's own shape (see r4_elements).
SHAPE_KEYS = ("min", "max", "type", "contentReference", "representation")
# Elements the source copy added to a differential too, so r4_elements cannot tell them from
# R4's own. Its differential edits are recognisable by a "base" key; of the four (all in
# ResearchStudy) only studyDesign (an R5 element) is absent from R4 researchstudy.html.
NOT_R4 = frozenset({"ResearchStudy.studyDesign"})


def type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith(SYSTEM_PREFIX):
        for ext in t.get("extension", ()):
            if ext["url"] == FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return SYSTEM_TO_FHIR[code[len(SYSTEM_PREFIX) :]]
    return ALIASES.get(code, code)


def target_names(types: list[dict[str, Any]], known: set[str]) -> list[str]:
    """Target resource types of Reference/canonical; profiles outside core R4 are dropped."""
    out: list[str] = []
    for t in types:
        for profile in t.get("targetProfile", ()):
            if profile.startswith(SD_BASE):
                name = profile[len(SD_BASE) :]
                if (name in known or name == "Resource") and name not in out:
                    out.append(name)
    return out


def compact_element(el: dict[str, Any], kind: str, known: set[str]) -> dict[str, Any]:
    path: str = el["path"]
    out: dict[str, Any] = {"p": path, "n": el["min"], "x": el["max"]}
    if "contentReference" in el:
        out["r"] = el["contentReference"].lstrip("#")
        return out
    types = el.get("type", [])
    codes = [type_code(t) for t in types]
    if kind == "resource" and path.count(".") == 1 and path.endswith(".id"):
        # Resource.id is `id` in R4 (resource.html#id); the snapshot encodes it as
        # System.String with fhir-type `string`, which would lose the id syntax rule.
        codes = ["id"]
    out["t"] = list(dict.fromkeys(codes))
    if path.endswith("[x]"):
        out["c"] = 1
    targets = target_names(types, known)
    if targets:
        out["g"] = targets
    if "xmlAttr" in el.get("representation", ()):
        out["a"] = 1
    return out


def r4_elements(sd: dict[str, Any]) -> list[dict[str, Any]]:
    """The snapshot elements of one type as published in R4 4.0.1.

    The source copy (Medplum's) edits snapshots but leaves the R4 differentials alone: it
    adds elements (Meta.project, Binary.url, R5 parts of ResearchStudy and EvidenceVariable),
    drops or retypes a few, and widens some reference targets. In an R4 specialization the
    differential lists every element the type defines itself, so R4 is restored by keeping
    inherited snapshot elements (base.path != path), taking the type's own elements' shape
    from the differential, dropping own elements it does not list (with their descendants)
    and adding the ones it lists that the snapshot lacks.
    """
    diff = [
        d for d in sd["differential"]["element"] if "." in d["path"] and d["path"] not in NOT_R4
    ]
    by_path = {d["path"]: d for d in diff}
    kept: list[dict[str, Any]] = []
    dropped: list[str] = []
    for el in sd["snapshot"]["element"]:
        path = el["path"]
        if "." not in path or any(path.startswith(d + ".") for d in dropped):
            continue
        own = el["base"]["path"] == path
        if own and path not in by_path:
            dropped.append(path)
            continue
        patch = by_path.get(path, {})
        kept.append({**el, **{k: patch[k] for k in SHAPE_KEYS if k in patch}})
    present = {el["path"] for el in kept}
    for i, d in enumerate(diff):
        if d["path"] in present:
            continue
        if any(t["code"] in ("BackboneElement", "Element") for t in d.get("type", ())):
            raise ValueError(f"{d['path']}: restoring inline elements is not supported")
        # Insert after the preceding differential element and its descendants.
        before = diff[i - 1]["path"] if i else ""
        at = max(
            (
                j + 1
                for j, el in enumerate(kept)
                if el["path"] == before or el["path"].startswith(before + ".")
            ),
            default=len(kept),
        )
        kept.insert(at, {"min": 0, "max": "1", **d})
        present.add(d["path"])
    return kept


def primitive_info(sd: dict[str, Any]) -> dict[str, Any]:
    name: str = sd["type"]
    regex: str | None = None
    for el in sd["snapshot"]["element"]:
        if el["path"] == f"{name}.value":
            for t in el.get("type", ()):
                for ext in t.get("extension", ()):
                    if ext["url"] == REGEX_EXT:
                        regex = ext["valueString"]
    json_type = (
        "number" if name in JSON_NUMBERS else "boolean" if name in JSON_BOOLEANS else "string"
    )
    return {"json": json_type, "regex": regex}


def wanted(sd: dict[str, Any]) -> bool:
    if sd.get("resourceType") != "StructureDefinition":
        return False
    if sd.get("fhirVersion") != FHIR_VERSION or not sd["url"].startswith(SD_BASE):
        return False
    if sd["kind"] not in ("resource", "complex-type", "primitive-type"):
        return False
    # The abstract roots (Element, Resource) have no derivation; everything else must be a
    # specialization, which excludes constraint profiles such as SimpleQuantity.
    derivation = sd.get("derivation", "specialization")
    return bool(derivation == "specialization" and sd["type"] == sd["id"])


def build(folder: Path) -> dict[str, Any]:
    sds: list[dict[str, Any]] = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((folder / name).read_text(encoding="utf-8"))
        sds += [e["resource"] for e in bundle["entry"] if wanted(e["resource"])]
    known = {sd["type"] for sd in sds if sd["kind"] == "resource"}
    types: dict[str, Any] = {}
    for sd in sds:
        name = sd["type"]
        base = sd.get("baseDefinition")
        info: dict[str, Any] = {
            "kind": sd["kind"],
            "abstract": bool(sd.get("abstract", False)),
            "base": base[len(SD_BASE) :] if base else None,
        }
        # The root element (path == type name) carries nothing the validator needs.
        elements = [compact_element(el, sd["kind"], known) for el in r4_elements(sd)]
        if sd["kind"] == "primitive-type":
            info.update(primitive_info(sd))
            for el in elements:
                if el["p"] == f"{name}.value":
                    # The value is a System type (System.String ...); name the primitive.
                    el["t"] = [name]
        info["elements"] = elements
        types[name] = info
    return {"version": FHIR_VERSION, "aliases": ALIASES, "types": types}


def encode(data: dict[str, Any]) -> bytes:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    # mtime=0 keeps the output byte-for-byte reproducible.
    return gzip.compress(raw, 9, mtime=0)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/fhir"
    data = build(folder)
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    OUT.write_bytes(encode(data))
    kinds = [t["kind"] for t in data["types"].values()]
    print(
        f"{OUT.name}: {len(data['types'])} types "
        f"({kinds.count('resource')} resource, {kinds.count('complex-type')} complex, "
        f"{kinds.count('primitive-type')} primitive), "
        f"{len(raw):,} bytes, {OUT.stat().st_size:,} gzipped"
    )


if __name__ == "__main__":
    main()
