"""Keeping a document's references inside the document (R4 bundle.html#references).

A summary carries a selection of the record, so some stored references point at resources it
does not carry (the Encounter an Observation was made in, another patient's record, a server
elsewhere). A document must be readable on its own: such a reference is reduced to its
``display`` (or dropped when it has none), never left dangling. References to resources the
document does carry are rewritten by the caller's mapping (RESTful ``Type/id`` for
``$summary``, ``urn:uuid:`` for the shared bundle).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

# R4 references.html: [base/]Type/id[/_history/vid]; ids are [A-Za-z0-9-.]{1,64}.
_LOCAL = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?")


@lru_cache(maxsize=8192)  # the same few references recur in every resource of a record
def local_key(reference: str, base: str) -> str | None:
    """``Type/id`` when ``reference`` names a resource on this server, else None.

    Relative references and absolute ones under ``base`` are local; a version-specific
    reference names the resource (a document carries the current version).
    """
    if base and reference.startswith(base + "/"):
        reference = reference[len(base) + 1 :]
    match = _LOCAL.fullmatch(reference)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def iter_reference_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every Reference-like object (a dict with a string ``reference``), contained included."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            if isinstance(value, dict | list):
                yield from iter_reference_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_reference_objects(item)


def internalise(node: Any, target: Callable[[str], str | None]) -> Any:
    """A copy of ``node`` whose references all resolve inside the document.

    ``target(reference)`` is the reference to write instead, or None when the document does not
    carry what it names. ``#local`` references to contained resources stay as they are. An
    unresolved Reference keeps its ``display`` (and ``type``) when it has one; otherwise it is
    removed — from a list, or as an element (which then reads as absent); an element left
    empty by that is removed in turn (FHIR JSON has no empty objects or arrays).
    """
    if isinstance(node, list):
        out = []
        for item in node:
            copied = internalise(item, target)
            if copied is not _DROP:
                out.append(copied)
        return out
    if not isinstance(node, dict):
        return node
    reference = node.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        new = target(reference)
        if new is None:
            if not isinstance(node.get("display"), str):
                return _DROP
            return {k: node[k] for k in ("display", "type", "identifier") if k in node}
        node = {**node, "reference": new}
    result: dict[str, Any] = {}
    for key, value in node.items():
        if not isinstance(value, dict | list):
            result[key] = value
            continue
        copied = internalise(value, target)
        if copied is _DROP or copied == [] or copied == {}:
            continue
        result[key] = copied
    return result if result or not node else _DROP


class _Drop:
    """Marker: this Reference is removed."""


_DROP: Any = _Drop()
