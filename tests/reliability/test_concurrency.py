"""Concurrent writers: conditional creates create once; If-Match lets exactly one update win."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from conftest import ServerThread
from support import FHIR_JSON, create, patient, unique

WRITERS = 12


def test_concurrent_conditional_creates_with_one_identifier_create_exactly_one(
    server: ServerThread,
) -> None:
    mrn = unique()
    body = patient(identifier=[{"system": "urn:race", "value": mrn}])
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier=urn:race|{mrn}"}

    def post(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            r = c.post("/Patient", json=body, headers=headers)
            return r.status_code, r.json()["id"]

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(post, range(WRITERS)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * (WRITERS - 1) + [201]
    assert len({id for _, id in results}) == 1
    with httpx.Client(base_url=server.base) as c:
        assert c.get("/Patient", params={"identifier": f"urn:race|{mrn}"}).json()["total"] == 1


def test_concurrent_updates_with_the_same_if_match_let_exactly_one_win(
    server: ServerThread,
) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        created = create(c, patient())
    url = f"/Patient/{created['id']}"

    def put(i: int) -> int:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            body = dict(created, name=[{"family": f"Writer{i}"}])
            return c.put(url, json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = sorted(pool.map(put, range(WRITERS)))
    assert statuses == [200] + [412] * (WRITERS - 1)
    with httpx.Client(base_url=server.base) as c:
        current = c.get(url).json()
        history = c.get(f"{url}/_history").json()
    assert current["meta"]["versionId"] == "2"
    assert history["total"] == 2


def test_concurrent_create_on_update_of_one_new_id_creates_one_resource(
    server: ServerThread,
) -> None:
    id = unique("new")

    def put(i: int) -> int:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            body = patient(id=id, name=[{"family": f"Writer{i}"}])
            return c.put(f"/Patient/{id}", json=body, headers=FHIR_JSON).status_code

    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = sorted(pool.map(put, range(WRITERS)))
    assert statuses.count(201) == 1
    assert statuses.count(200) == WRITERS - 1
    with httpx.Client(base_url=server.base) as c:
        assert c.get(f"/Patient/{id}/_history").json()["total"] == WRITERS
