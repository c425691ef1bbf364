"""Re-apply the security-label rules to stored data when the rule table changes.

Labels are added at write time (fhir/security_labels.py). When the rule table changes, the
resources written before it may lack labels it now calls for: ``relabel`` sweeps the types the
rules look at, in (type, id) order and batches, and writes a new version of each resource whose
labels change — an ordinary update, so the history shows when and why the record was labelled,
and the indexes (``_security``) follow. Rules only ever add labels; a label removed from the
table stays on the data it was put on (it may have been set by a person).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from psycopg import sql

from healthmesh.fhir.security_labels import CODED_PATHS, apply_security_labels, rules
from healthmesh.store.repository import Repository
from healthmesh.store.rows import now, prepare

log = logging.getLogger(__name__)
BATCH = 500


async def stored_digest(repository: Repository) -> str | None:
    async with repository.session(write=False) as session:
        rows = await session.fetch(sql.SQL("SELECT digest FROM label_rules_state"))
    return str(rows[0][0]) if rows else None


async def needs_relabel(repository: Repository) -> bool:
    return await stored_digest(repository) != rules().digest


async def labels_current(repository: Repository) -> bool:
    """Every stored resource the rules look at was labelled with the current rules: their
    digest is the one recorded, or no resource of the types they look at is stored yet.

    A bulk writer that labels everything it writes (the loader) may then record the digest
    when it is done, so the next start does not sweep the store again."""
    if not await needs_relabel(repository):
        return True
    async with repository.session(write=False) as session:
        rows = await session.fetch(
            sql.SQL("SELECT 1 FROM resource WHERE res_type = ANY({t}) LIMIT 1").format(
                t=sql.Literal(sorted(CODED_PATHS))
            )
        )
    return not rows


async def record_digest(repository: Repository) -> None:
    """Record that the stored data is labelled with the current rules."""
    async with repository.session() as session:
        await session.fetch(
            sql.SQL(
                "INSERT INTO label_rules_state (digest) VALUES ({d}) ON CONFLICT (singleton)"
                " DO UPDATE SET digest = EXCLUDED.digest, relabelled_at = now() RETURNING digest"
            ).format(d=sql.Literal(rules().digest))
        )


async def relabel(
    repository: Repository, *, progress: Callable[[int, int], None] | None = None
) -> int:
    """Label every stored resource the current rules call for; returns how many changed."""
    digest = rules().digest
    types = sorted(CODED_PATHS)
    cursor: tuple[str, str] | None = None
    changed = seen = 0
    while True:
        after: sql.Composable = sql.SQL("true")
        if cursor is not None:
            after = sql.SQL("(res_type, id) > ({}, {})").format(
                sql.Literal(cursor[0]), sql.Literal(cursor[1])
            )
        async with repository.session() as session:
            batch = await session.fetch(
                sql.SQL(
                    "SELECT res_type, id, version_id, content FROM resource"
                    " WHERE res_type = ANY({t}) AND NOT deleted AND {a}"
                    " ORDER BY res_type, id LIMIT {n} FOR UPDATE"
                ).format(t=sql.Literal(types), a=after, n=sql.Literal(BATCH))
            )
            if not batch:
                break
            at = now()
            for _type, _id, version_id, content in batch:
                resource = orjson.loads(content)
                if apply_security_labels(resource):
                    await session.replace(
                        prepare(resource, version_id=version_id + 1, last_updated=at)
                    )
                    changed += 1
            seen += len(batch)
            cursor = (batch[-1][0], batch[-1][1])
        if progress is not None:
            progress(seen, changed)
    await record_digest(repository)
    log.info("security labels: %d of %d resources newly labelled (rules %s)", changed, seen, digest)
    return changed
