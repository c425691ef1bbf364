"""US Core's search combinations on the Synthea set: every resource on every page matches, and
nothing that matches is missing (checked against the stored resources directly)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from healthmesh.load.loader import Loader, find_inputs
from healthmesh.store.repository import Repository

from conftest import ServerThread
from support import SYNTHEA

pytestmark = pytest.mark.shared

Resource = dict[str, Any]


@pytest.fixture(scope="module")
def stored(server: ServerThread, database_url: str) -> dict[str, list[Resource]]:
    """The Synthea set loaded, and every stored resource by type (as the server holds them)."""
    if not SYNTHEA.is_dir():
        pytest.skip("../shared/data/synthea is not present")

    async def load() -> None:
        repository = Repository(database_url, min_size=1, max_size=3)
        await repository.open()
        try:
            await Loader(repository).load(find_inputs([SYNTHEA]))
        finally:
            await repository.close()

    asyncio.run(load())
    by_type: dict[str, list[Resource]] = {}
    with psycopg.connect(database_url) as conn:
        for (content,) in conn.execute("SELECT content FROM resource WHERE NOT deleted"):
            resource = orjson.loads(content)
            by_type.setdefault(resource["resourceType"], []).append(resource)
    return by_type


def all_pages(client: httpx.Client, path: str, params: list[tuple[str, str]]) -> list[Resource]:
    page = client.get(path, params=[*params, ("_count", "7")]).json()
    found: list[Resource] = []
    while True:
        assert page["resourceType"] == "Bundle", page
        found += [e["resource"] for e in page.get("entry", []) if e["search"]["mode"] == "match"]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            return found
        page = httpx.get(following[0]).json()


def codes(concepts: Any) -> set[tuple[str | None, str | None]]:
    items = concepts if isinstance(concepts, list) else [concepts]
    return {
        (c.get("system"), c.get("code"))
        for item in items
        if isinstance(item, dict)
        for c in item.get("coding", [])
    }


def of_patient(resource: Resource, pid: str) -> bool:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and ref.get("reference") == f"Patient/{pid}":
            return True
    return False


def check(
    client: httpx.Client,
    stored: dict[str, list[Resource]],
    res_type: str,
    params: list[tuple[str, str]],
    matches: Callable[[Resource], bool],
) -> list[Resource]:
    found = all_pages(client, f"/{res_type}", params)
    ids = [r["id"] for r in found]
    assert len(ids) == len(set(ids)), "a resource appears on two pages"
    assert all(matches(r) for r in found), "a returned resource does not match"
    expected = {r["id"] for r in stored.get(res_type, []) if matches(r)}
    assert set(ids) == expected, "a matching resource is missing"
    return found


@pytest.fixture(scope="module")
def someone(stored: dict[str, list[Resource]]) -> Resource:
    """A patient with labs, vitals, conditions and reports (the richest record)."""

    def richness(p: Resource) -> int:
        return sum(1 for r in stored["Observation"] if of_patient(r, p["id"]))

    return max(stored["Patient"], key=richness)


def test_patient_by_id_identifier_and_name(
    client: httpx.Client, stored: dict[str, list[Resource]], someone: Resource
) -> None:
    pid = someone["id"]
    check(client, stored, "Patient", [("_id", pid)], lambda r: r["id"] == pid)
    ident = someone["identifier"][0]
    check(
        client,
        stored,
        "Patient",
        [("identifier", f"{ident['system']}|{ident['value']}")],
        lambda r: any(
            i.get("system") == ident["system"] and i.get("value") == ident["value"]
            for i in r.get("identifier", [])
        ),
    )
    family = someone["name"][0]["family"]
    prefix = family[:3]
    check(
        client,
        stored,
        "Patient",
        [("name", prefix.upper())],
        lambda r: any(
            part.lower().startswith(prefix.lower())
            for n in r.get("name", [])
            for part in [
                n.get("family", ""),
                *n.get("given", []),
                *n.get("prefix", []),
                *n.get("suffix", []),
                n.get("text", ""),
            ]
        ),
    )


def test_patient_combinations(
    client: httpx.Client, stored: dict[str, list[Resource]], someone: Resource
) -> None:
    family, birth, gender = someone["name"][0]["family"], someone["birthDate"], someone["gender"]

    def named(r: Resource) -> bool:
        return any(
            n.get("family", "").lower().startswith(family.lower()) for n in r.get("name", [])
        )

    check(
        client,
        stored,
        "Patient",
        [("birthdate", birth), ("family", family)],
        lambda r: r.get("birthDate") == birth and named(r),
    )
    check(
        client,
        stored,
        "Patient",
        [("gender", gender), ("family", family)],
        lambda r: r.get("gender") == gender and named(r),
    )
    check(
        client,
        stored,
        "Patient",
        [("gender", "female,male"), ("birthdate", f"ge{birth[:4]}")],
        lambda r: r.get("gender") in ("female", "male") and r.get("birthDate", "") >= birth[:4],
    )


@pytest.mark.parametrize(
    "res_type",
    [
        "Observation",
        "Condition",
        "DiagnosticReport",
        "CarePlan",
        "AllergyIntolerance",
        "Encounter",
        "Immunization",
        "Procedure",
        "MedicationRequest",
    ],
)
def test_patient_scoped_queries_and_reference_forms(
    client: httpx.Client, stored: dict[str, list[Resource]], someone: Resource, res_type: str
) -> None:
    pid = someone["id"]
    plain = check(client, stored, res_type, [("patient", pid)], lambda r: of_patient(r, pid))
    typed = check(
        client, stored, res_type, [("patient", f"Patient/{pid}")], lambda r: of_patient(r, pid)
    )
    assert {r["id"] for r in plain} == {r["id"] for r in typed}


@pytest.mark.parametrize("res_type", ["Observation", "Condition", "DiagnosticReport", "CarePlan"])
def test_patient_and_category(
    client: httpx.Client, stored: dict[str, list[Resource]], someone: Resource, res_type: str
) -> None:
    pid = someone["id"]
    mine = [r for r in stored[res_type] if of_patient(r, pid) and r.get("category")]
    if not mine:
        pytest.skip(f"no categorised {res_type} for this patient")
    system, code = next(iter(codes(mine[0]["category"])))
    check(
        client,
        stored,
        res_type,
        [("patient", pid), ("category", f"{system}|{code}")],
        lambda r: of_patient(r, pid) and (system, code) in codes(r.get("category", [])),
    )


def test_observation_code_or_values_status_and_date(
    client: httpx.Client, stored: dict[str, list[Resource]], someone: Resource
) -> None:
    pid = someone["id"]
    mine = [r for r in stored["Observation"] if of_patient(r, pid)]
    first, second = sorted({c for r in mine for c in codes(r["code"])})[:2]
    check(
        client,
        stored,
        "Observation",
        [("patient", pid), ("code", f"{first[0]}|{first[1]},{second[0]}|{second[1]}")],
        lambda r: of_patient(r, pid) and bool({first, second} & codes(r["code"])),
    )
    check(
        client,
        stored,
        "Observation",
        [("patient", pid), ("status", "final")],
        lambda r: of_patient(r, pid) and r.get("status") == "final",
    )
    vitals = ("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")
    check(
        client,
        stored,
        "Observation",
        [("patient", pid), ("category", "vital-signs"), ("date", "ge2015-01-01")],
        lambda r: (
            of_patient(r, pid)
            and vitals in codes(r.get("category", []))
            and r.get("effectiveDateTime", "") >= "2015-01-01"
        ),
    )
