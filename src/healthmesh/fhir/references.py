"""Finding and rewriting literal references inside a resource (R4 references.html).

In FHIR JSON a literal reference is always the string ``reference`` of a Reference object,
so a walk over dicts finds every one without the structure definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def iter_references(node: Any) -> Iterator[str]:
    """Every ``Reference.reference`` string in the resource, contained resources included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            elif isinstance(value, dict | list):
                yield from iter_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_references(item)


def rewrite_references(node: Any, rewrite: Callable[[str], str | None]) -> int:
    """Replace references in place where ``rewrite`` returns a new value; return how many."""
    # Every write's hot path (the loader walks each resource): most values are strings that
    # are not a reference, so they are passed over with one type check.
    changed = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if type(value) is str and key != "reference":
                continue
            if key == "reference" and isinstance(value, str):
                new = rewrite(value)
                if new is not None and new != value:
                    node[key] = new
                    changed += 1
            elif isinstance(value, _CONTAINERS):
                changed += rewrite_references(value, rewrite)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, _CONTAINERS):
                changed += rewrite_references(item, rewrite)
    return changed


_CONTAINERS = (dict, list)
