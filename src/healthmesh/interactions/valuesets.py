"""``:in`` and ``:not-in`` (R4 search.html#modifiers): codes of a ValueSet stored on this server.

The ValueSet is found by its canonical ``url`` and expanded from ``expansion.contains`` when it
has one, else from an enumerated ``compose`` (include/exclude concept lists). A compose that
needs a terminology server (whole code systems, filters, imported value sets) is refused with
a clear 400 rather than answered wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
from psycopg import sql

from healthmesh.fhir.errors import InvalidRequest, NotSupported
from healthmesh.fhir.search.query import Clause
from healthmesh.store.repository import Session


def _contains(items: list[Any]) -> Iterator[tuple[str | None, str]]:
    for item in items:
        if isinstance(item, dict):
            if isinstance(item.get("code"), str):
                yield item.get("system"), item["code"]
            yield from _contains(item.get("contains", []))


def _enumerated(parts: list[Any], url: str) -> set[tuple[str | None, str]]:
    codes: set[tuple[str | None, str]] = set()
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("filter") or part.get("valueSet") or not part.get("concept"):
            raise NotSupported(
                f"ValueSet {url} needs a terminology server to expand (filters, imports or whole code systems)"
            )
        codes.update(
            (part.get("system"), c["code"])
            for c in part["concept"]
            if isinstance(c, dict) and "code" in c
        )
    return codes


def codes_of(valueset: dict[str, Any], url: str) -> set[tuple[str | None, str]]:
    expansion = valueset.get("expansion")
    if isinstance(expansion, dict) and expansion.get("contains"):
        return set(_contains(expansion["contains"]))
    compose = valueset.get("compose")
    if not isinstance(compose, dict):
        raise NotSupported(f"ValueSet {url} has neither an expansion nor a compose to expand")
    return _enumerated(compose.get("include", []), url) - _enumerated(
        compose.get("exclude", []), url
    )


async def _expand(session: Session, url: str, where: str) -> set[tuple[str | None, str]]:
    rows = await session.fetch(
        sql.SQL(
            "SELECT r.content FROM resource r WHERE r.res_type = 'ValueSet' AND NOT r.deleted AND EXISTS"
            " (SELECT 1 FROM search_uri u WHERE u.res_type = 'ValueSet' AND u.res_id = r.id AND u.param = 'url'"
            " AND u.uri = {url}) ORDER BY r.last_updated DESC LIMIT 1"
        ).format(url=sql.Literal(url.split("|", 1)[0]))
    )
    if not rows:
        raise InvalidRequest(
            f"{where}: no ValueSet with url {url} is stored on this server", expression=where
        )
    return codes_of(orjson.loads(rows[0][0]), url)


async def expand_value_sets(session: Session, clauses: list[Clause]) -> list[Clause]:
    """The clauses with every :in/:not-in turned into the codes of its ValueSets."""
    out = []
    for c in clauses:
        if c.modifier in ("in", "not-in"):
            codes: set[tuple[str | None, str]] = set()
            for url in c.values:
                codes |= await _expand(session, url, c.name)
            # An empty set matches nothing; the compiler's OR of no values is false.
            values = tuple(sorted(f"{s}|{code}" if s else f"|{code}" for s, code in codes))
            out.append(replace(c, values=values))
        elif c.chain:
            out.append(replace(c, chain=tuple(await expand_value_sets(session, list(c.chain)))))
        elif c.has is not None:
            (inner,) = await expand_value_sets(session, [c.has])
            out.append(replace(c, has=inner))
        else:
            out.append(c)
    return out
