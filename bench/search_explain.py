"""The SQL the server runs for a search, and EXPLAIN ANALYZE of it: the first tool when a
query of the mix misses its target.

    python -m bench.search_explain --database-url URL 'Observation?patient=123&_sort=-date'
    python -m bench.search_explain --database-url URL --consent-actor client:app 'Patient?_id=1'

The search runs in-process through the same interaction and compiler the server uses, on a
session whose statements are recorded; each is then explained with ``ANALYZE, BUFFERS``.
``--consent-actor``: as a ``system/*.rs`` token of that actor would search, under the
patients' Consents and the sensitive-data default (store/consent_sql.py).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from psycopg import sql

from healthmesh.interactions.context import FhirRequest
from healthmesh.interactions.search import search
from healthmesh.store.access import ConsentContext, RowRule, Visibility
from healthmesh.store.repository import Repository


def _visibility(consent_actor: str | None) -> Visibility | None:
    if consent_actor is None:
        return None
    return Visibility({"s": (RowRule(),)}, consent=ConsentContext(actors=(consent_actor,)))


async def _statements(url: str, path: str, consent_actor: str | None = None) -> list[str]:
    res_type, _, query = path.removeprefix("/fhir/").partition("?")
    request = FhirRequest(method="GET", path=(res_type,), params=parse_qsl(query), base="")
    repository = Repository(url, min_size=1, max_size=1)
    await repository.open()
    seen: list[str] = []
    try:
        async with repository.session(
            write=False, visibility=_visibility(consent_actor)
        ) as session:
            original = session.fetch

            async def recording(statement: sql.SQL | sql.Composed) -> list[tuple[Any, ...]]:
                seen.append(statement.as_string(session.conn))
                return await original(statement)

            session.fetch = recording  # type: ignore[method-assign,assignment]
            await search(session, request, res_type)
    finally:
        await repository.close()
    return seen


def server_statements(url: str, path: str, consent_actor: str | None = None) -> list[str]:
    """The statements the server's search runs for ``path`` (``Type?query``)."""
    return asyncio.run(_statements(url, path, consent_actor))


def explain(url: str, statement: str, params: dict[str, Any] | None = None) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement, as text."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_explain", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument(
        "--consent-actor", help="search as a system token of this actor, under Consents"
    )
    parser.add_argument("path", help="Type?query, as in the URL after /fhir/")
    args = parser.parse_args(argv)
    for statement in server_statements(args.database_url, args.path, args.consent_actor):
        print(statement, end="\n\n")
        print(explain(args.database_url, statement), end="\n\n")


if __name__ == "__main__":
    main()
