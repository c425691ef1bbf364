"""Patient/[id]/$everything (R4 patient-operation-everything.html): the patient's whole record.

The patient, every resource in their compartment, and the resources those refer to that belong
to no other patient; ``_since``, ``_type`` and ``_count``, paged in (type, id) order by a
cursor (interactions/id_paging.py): writes between pages skip or repeat nothing.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from healthmesh.fhir.dates import parse_instant
from healthmesh.fhir.errors import Forbidden, InvalidRequest, NotFound
from healthmesh.interactions.bundles import resource_view
from healthmesh.interactions.context import FhirRequest, FhirResult, check_id
from healthmesh.interactions.id_paging import keyset_page, repeated
from healthmesh.interactions.paging import page_params
from healthmesh.interactions.search import requested_types
from healthmesh.store.repository import Session
from healthmesh.store.search.compartment import everything_query


async def everything(session: Session, request: FhirRequest, patient_id: str) -> FhirResult:
    check_id(patient_id)
    if session.visibility is not None and not session.visibility.covers("Patient", "r"):
        raise Forbidden("This token's scopes do not permit reading Patient records")
    current = await session.readable("Patient", patient_id)
    if current is None or current.deleted:
        raise NotFound(f"Patient/{patient_id} is not known")
    count, offset = page_params(request, default=100)
    since: sql.Composable | None = None
    if (raw := request.param("_since")) is not None:
        moment = parse_instant(raw)
        if moment is None:
            raise InvalidRequest(f"_since '{raw}' is not an instant", expression="_since")
        since = sql.Literal(moment)
    types = requested_types(request)
    visible = session.visible("s", sql.Identifier("r"), None, record_of=patient_id)

    def select(after: sql.Composable, order: sql.Composable, limit: int) -> sql.Composed:
        # ``__offset``: a link this server made before cursors, honoured for its one page.
        return everything_query(
            patient_id,
            types=types,
            since=since,
            limit=limit,
            offset=offset,
            visible=visible,
            after=after,
            order=order,
        )

    path = f"Patient/{patient_id}/$everything"
    rows, more, links = await keyset_page(session, request, select, count, path, repeated(request))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    first = offset == 0 and request.param("__after") is None and request.param("__before") is None
    if first and not more:
        bundle["total"] = len(rows)
    elif first and count == 0:
        # _count=0: no entries, only how many there are (R5 search.html#count; what
        # clients of R4 servers ask it for too, as of _summary=count).
        counted = await session.fetch(
            sql.SQL("SELECT count(*) FROM ({}) e").format(
                everything_query(patient_id, types=types, since=since, limit=None, visible=visible)
            )
        )
        bundle["total"] = int(counted[0][0])
    entries = [
        {
            "fullUrl": f"{request.base}/{res_type}/{id}",
            "resource": resource_view(content, summary=None, elements=None),
            "search": {"mode": "match"},
        }
        for res_type, id, content in rows
    ]
    if entries:
        bundle["entry"] = entries
    return FhirResult(status=200, body=bundle)
