"""Custom SearchParameters: loading them into the registry, and reindexing existing data.

When an active SearchParameter is stored, new writes index it at once (the registry is
refreshed in the process that stored it, and every 15 s in others); a background job indexes
the resources already stored, in batches, without stopping the server. Its progress is a FHIR
Task — ``Task?identifier=urn:healthmesh:reindex|SearchParameter/[id]/_history/[v]`` — with
``status`` in-progress or completed and outputs processed / total / cursor, so a job cut short
by a restart resumes where it stopped. After the sweep, resources written meanwhile by a
process that had not yet seen the parameter are swept again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from psycopg import sql

from healthmesh.fhir.definitions import SearchParamDef, set_custom_params
from healthmesh.fhir.errors import FhirError
from healthmesh.fhir.search.custom import definition_from_resource, is_active
from healthmesh.fhir.search.extract import extract_param
from healthmesh.interactions import create, write
from healthmesh.store.repository import Repository
from healthmesh.store.rows import now

log = logging.getLogger(__name__)
TASK_SYSTEM = "urn:healthmesh:reindex"
BATCH = 500
REFRESH_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class StoredParameter:
    id: str
    version: int
    definition: SearchParamDef

    @property
    def key(self) -> str:
        return f"SearchParameter/{self.id}/_history/{self.version}"


@dataclass
class SearchParameterWatch:
    """This process's view of the stored SearchParameters and the reindex jobs it runs."""

    repository: Repository
    stamp: datetime | None = None
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def refresh(self, *, force: bool = False) -> None:
        """Reload the registry if any SearchParameter changed; start the reindexing needed."""
        async with self.repository.session(write=False) as session:
            rows = await session.fetch(
                sql.SQL("SELECT max(last_updated) FROM resource WHERE res_type = 'SearchParameter'")
            )
        stamp = rows[0][0]
        if stamp == self.stamp and not force:
            return
        self.stamp = stamp
        stored = await self._load()
        set_custom_params(p.definition for p in stored)
        for parameter in stored:
            if parameter.key not in self.running:
                self.running[parameter.key] = asyncio.create_task(self._reindex_safely(parameter))

    async def _load(self) -> list[StoredParameter]:
        async with self.repository.session(write=False) as session:
            rows = await session.fetch(
                sql.SQL(
                    "SELECT id, version_id, content FROM resource WHERE res_type = 'SearchParameter' AND NOT deleted"
                )
            )
        stored = []
        for id, version, content in rows:
            resource = orjson.loads(content)
            if not is_active(resource):
                continue
            try:
                stored.append(StoredParameter(id, version, definition_from_resource(resource)))
            except FhirError as error:
                log.warning("SearchParameter/%s cannot be indexed: %s", id, error)
        return stored

    async def watch(self) -> None:
        """Run for the life of the app: pick up SearchParameters written by other processes."""
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception:
                log.exception("refreshing custom search parameters failed")

    async def close(self) -> None:
        for job in self.running.values():
            job.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _reindex_safely(self, parameter: StoredParameter) -> None:
        try:
            await reindex(self.repository, parameter)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reindexing %s failed; it resumes at the next start", parameter.key)


def _output(task: dict[str, Any], name: str) -> Any:
    for item in task.get("output", []):
        if item.get("type", {}).get("text") == name:
            return item.get("valueInteger", item.get("valueString"))
    return None


def _task_body(
    parameter: StoredParameter, status: str, processed: int, total: int, cursor: str | None
) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [
        {"type": {"text": "processed"}, "valueInteger": processed},
        {"type": {"text": "total"}, "valueInteger": total},
    ]
    if cursor:
        outputs.append({"type": {"text": "cursor"}, "valueString": cursor})
    return {
        "resourceType": "Task",
        "identifier": [{"system": TASK_SYSTEM, "value": parameter.key}],
        "status": status,
        "intent": "order",
        "code": {"text": "reindex"},
        "focus": {"reference": f"SearchParameter/{parameter.id}"},
        "description": f"Index stored {', '.join(parameter.definition.base)} for search parameter "
        f"'{parameter.definition.code}'",
        "output": outputs,
    }


async def reindex(repository: Repository, parameter: StoredParameter) -> None:
    definition = parameter.definition
    async with repository.session() as session:
        found = await create.create(
            session,
            "Task",
            _task_body(parameter, "in-progress", 0, 0, None),
            if_none_exist=f"identifier={TASK_SYSTEM}|{parameter.key}",
        )
    assert found.version is not None
    assert found.version.content is not None
    task = orjson.loads(found.version.content)
    if task.get("status") == "completed":
        return
    task_id = task["id"]
    started = now()
    processed = int(_output(task, "processed") or 0)
    cursor: str | None = _output(task, "cursor")
    async with repository.session(write=False) as session:
        rows = await session.fetch(
            sql.SQL(
                "SELECT count(*) FROM resource WHERE res_type = ANY({}) AND NOT deleted"
            ).format(sql.Literal(list(definition.base)))
        )
    total = int(rows[0][0])
    while True:
        after: sql.Composable = sql.SQL("true")
        if cursor:
            res_type, _, id = cursor.partition("/")
            after = sql.SQL("(res_type, id) > ({}, {})").format(
                sql.Literal(res_type), sql.Literal(id)
            )
        async with repository.session() as session:
            batch = await session.fetch(
                sql.SQL(
                    "SELECT res_type, id, patient_id, content FROM resource WHERE res_type = ANY({b}) AND NOT deleted"
                    " AND {a} ORDER BY res_type, id LIMIT {n}"
                ).format(b=sql.Literal(list(definition.base)), a=after, n=sql.Literal(BATCH))
            )
            if not batch:
                break
            await _index_batch(session, definition.code, batch)
            processed += len(batch)
            cursor = f"{batch[-1][0]}/{batch[-1][1]}"
            body = _task_body(parameter, "in-progress", processed, max(total, processed), cursor)
            await write.update(session, {**body, "id": task_id}, "Task", task_id)
    # Writes that happened during the sweep in a process that had not yet seen the parameter.
    async with repository.session() as session:
        late = await session.fetch(
            sql.SQL(
                "SELECT res_type, id, patient_id, content FROM resource WHERE res_type = ANY({b}) AND NOT deleted"
                " AND last_updated >= {t}"
            ).format(b=sql.Literal(list(definition.base)), t=sql.Literal(started))
        )
        if late:
            await _index_batch(session, definition.code, late)
        body = _task_body(parameter, "completed", processed, max(total, processed), None)
        await write.update(session, {**body, "id": task_id}, "Task", task_id)
    log.info("reindexed %d resources for %s", processed, parameter.key)


async def _index_batch(session: Any, code: str, batch: list[tuple[Any, ...]]) -> None:
    by_type: dict[str, list[tuple[str, str | None, Any]]] = {}
    for res_type, id, patient_id, content in batch:
        by_type.setdefault(res_type, []).append(
            (id, patient_id, extract_param(orjson.loads(content), code))
        )
    for res_type, rows in by_type.items():
        await session.replace_param_index(res_type, code, rows)
