"""Collection helpers: singleton evaluation, boolean conversion and de-duplication
(spec §4.5 "Singleton evaluation of collections", §6.5 "Collections")."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from .errors import FhirPathEvaluationError
from .model import Node
from .values import to_system


def single_value(collection: list[Any], what: str) -> Any:
    """The System value of the only item; ``None`` when empty; error for several items."""
    if not collection:
        return None
    if len(collection) > 1:
        raise FhirPathEvaluationError(f"{what} expects a single item, got {len(collection)}")
    return to_system(collection[0])


def to_boolean(collection: list[Any], what: str) -> bool | None:
    """Singleton evaluation as Boolean: empty → ``None``; one non-Boolean item → true."""
    if not collection:
        return None
    if len(collection) > 1:
        raise FhirPathEvaluationError(
            f"{what} expects a single Boolean, got a collection of {len(collection)} items"
        )
    item = collection[0]
    if item is True or item is False:
        return bool(item)
    if type(item) is Node:
        value = item.value
        if value is True or value is False:
            return bool(value)
    return True


def item_key(item: Any) -> Any:
    """A hashable key such that items with equal keys are equal per ``=`` (spec §6.1.1)."""
    value = to_system(item)
    t = type(value)
    if t is bool:
        return (bool, value)
    if t is int or t is Decimal:
        return (Decimal, value)  # 1 = 1.0: equal values of both types share hash and equality
    if t is Node:
        data = value.value
        if data is None:
            return (Node, id(value))
        try:
            return (Node, orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
        except TypeError:
            return (Node, repr(data))
    try:
        hash(value)
    except TypeError:
        return (object, id(value))
    return (t, value)


def distinct(items: list[Any]) -> list[Any]:
    if len(items) < 2:
        return list(items)
    seen: set[Any] = set()
    out: list[Any] = []
    for item in items:
        key = item_key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def union(left: list[Any], right: list[Any]) -> list[Any]:
    """``|``: both collections merged without duplicates, order preserved (spec §6.5.1)."""
    if not right:
        return distinct(left)
    if not left:
        return distinct(right)
    return distinct(left + right)
