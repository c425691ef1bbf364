"""Is this the Bundle Kill the Clipboard promises? (SPECS.md §6, PatientSharedBundle.)

Bundle.type ``collection``, exactly one Patient (with name, birthDate and gender), at least
one more entry, every fullUrl ``urn:uuid:`` and every reference internal (to a fullUrl of the
Bundle), all structurally valid R4. A SMART Health Card's Bundle (``resource:N`` fullUrls, SHC spec) passes the same
rules with its own fullUrl form. A failure names the element, Bundle.entry[n]….
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from healthmesh.checkin import errors
from healthmesh.fhir.references import iter_references, rewrite_references
from healthmesh.fhir.validation import validate_resource

Resource = dict[str, Any]


def check_shared_bundle(bundle: Any, *, card: bool = False) -> list[tuple[str, Resource]]:
    """The (fullUrl, resource) entries of a valid bundle; invalid-bundle naming what is wrong."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise errors.invalid_bundle("The shared file is not a FHIR Bundle.", "Bundle")
    if bundle.get("type") != "collection":
        raise errors.invalid_bundle("A shared Bundle is of type collection.", "Bundle.type")
    raw = bundle.get("entry")
    if not isinstance(raw, list) or not raw:
        raise errors.invalid_bundle("The shared Bundle has no entries.", "Bundle.entry")
    # Structurally valid R4 first (every element's type and cardinality), so that the summary
    # and the import work on well-formed resources; the first error is named.
    problems = [
        i
        for i in validate_resource(_as_urns(bundle) if card else bundle, expected_type="Bundle")
        if i.severity in ("error", "fatal")
    ]
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise errors.invalid_bundle(
            f"The shared Bundle is not valid FHIR R4: {first.diagnostics}{more}.", first.expression
        )
    prefix = "resource:" if card else "urn:uuid:"
    entries: list[tuple[str, Resource]] = []
    for i, entry in enumerate(raw):
        where = f"Bundle.entry[{i}]"
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(full_url, str) or not full_url.startswith(prefix):
            raise errors.invalid_bundle(f"Every fullUrl is {prefix}….", f"{where}.fullUrl")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise errors.invalid_bundle("Every entry carries a resource.", f"{where}.resource")
        entries.append((full_url, resource))
    urls = [u for u, _ in entries]
    if len(set(urls)) != len(urls):
        raise errors.invalid_bundle("Two entries share a fullUrl.", "Bundle.entry.fullUrl")
    patients = [i for i, (_, r) in enumerate(entries) if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise errors.invalid_bundle(
            f"A shared Bundle holds exactly one Patient, not {len(patients)}.", "Bundle.entry"
        )
    if not card:
        if len(entries) < 2:
            raise errors.invalid_bundle(
                "A shared Bundle holds the Patient and at least one more entry.", "Bundle.entry"
            )
        patient = entries[patients[0]][1]
        for element in ("name", "birthDate", "gender"):
            if not patient.get(element):
                raise errors.invalid_bundle(
                    f"The shared Patient has no {element}.",
                    f"Bundle.entry[{patients[0]}].resource.{element}",
                )
    known = set(urls)
    for i, (_, resource) in enumerate(entries):
        for reference in iter_references(resource):
            if reference.startswith("#"):
                continue  # a contained resource
            if reference not in known:
                raise errors.invalid_bundle(
                    "A reference points outside the shared Bundle (only internal references"
                    " are allowed).",
                    f"Bundle.entry[{i}].resource",
                )
    return entries


def _as_urns(bundle: dict[str, Any]) -> dict[str, Any]:
    """A card's Bundle with its ``resource:N`` fullUrls and references as urn:uuids (R4 has
    no ``resource:`` scheme; the SHC spec uses it), for structural validation only."""
    copied: dict[str, Any] = copy.deepcopy(bundle)

    def urn(value: str) -> str | None:
        if not value.startswith("resource:"):
            return None
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, value)}"

    for entry in copied.get("entry") or []:
        if isinstance(entry, dict) and isinstance(entry.get("fullUrl"), str):
            entry["fullUrl"] = urn(entry["fullUrl"]) or entry["fullUrl"]
    rewrite_references(copied, urn)
    # Cards in the wild (ours included) can carry what minimising left empty, e.g.
    # `performer: [{}]`; the import drops those too, so they are no reason to refuse a card.
    prune_empty(copied)
    return copied


def prune_empty(node: Any) -> bool:
    """Drop empty objects and lists in place (FHIR JSON forbids them, json.html); True when
    ``node`` itself ended up empty."""
    if isinstance(node, dict):
        for key in [k for k, v in node.items() if prune_empty(v)]:
            del node[key]
        return not node
    if isinstance(node, list):
        node[:] = [v for v in node if not prune_empty(v)]
        return not node
    return False
