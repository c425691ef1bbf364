"""history at instance, type and system level with _since, _at, _count and paging (R4 http.html#history)."""

from __future__ import annotations

import time

import httpx
import pytest

from support import FHIR_JSON, create, patient


def _versions(bundle: dict[str, object]) -> list[str]:
    entries = bundle.get("entry", [])
    assert isinstance(entries, list)
    return [e["response"]["etag"] for e in entries]


def test_instance_history_lists_versions_newest_first(client: httpx.Client) -> None:
    created = create(client, patient())
    url = f"/Patient/{created['id']}"
    client.put(url, json=dict(created, gender="male"), headers=FHIR_JSON)
    client.delete(url)
    bundle = client.get(f"{url}/_history").json()
    assert bundle["type"] == "history" and bundle["total"] == 3
    assert _versions(bundle) == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in bundle["entry"][0]  # the delete
    assert bundle["entry"][1]["resource"]["gender"] == "male"


def test_instance_history_of_unknown_resource_is_404(client: httpx.Client) -> None:
    assert client.get("/Patient/nobody-here/_history").status_code == 404


@pytest.mark.usefixtures("empty_store")
def test_type_and_system_history_include_every_version(client: httpx.Client) -> None:
    a = create(client, patient())
    create(client, {"resourceType": "Organization", "name": "Clinic"})
    client.put(f"/Patient/{a['id']}", json=dict(a, gender="male"), headers=FHIR_JSON)
    assert len(client.get("/Patient/_history").json()["entry"]) == 2
    assert len(client.get("/_history").json()["entry"]) == 3


@pytest.mark.usefixtures("empty_store")
def test_since_keeps_versions_made_at_or_after_the_instant(client: httpx.Client) -> None:
    create(client, patient())
    time.sleep(0.02)
    second = create(client, patient())
    since = second["meta"]["lastUpdated"]
    bundle = client.get("/Patient/_history", params={"_since": since}).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [second["id"]]


@pytest.mark.usefixtures("empty_store")
def test_at_returns_the_versions_current_at_that_time(client: httpx.Client) -> None:
    created = create(client, patient(gender="female"))
    time.sleep(0.01)
    updated = client.put(
        f"/Patient/{created['id']}", json=dict(created, gender="male"), headers=FHIR_JSON
    ).json()
    at_first = client.get(
        "/Patient/_history", params={"_at": created["meta"]["lastUpdated"]}
    ).json()
    assert [e["resource"]["gender"] for e in at_first["entry"]] == ["female"]
    at_second = client.get(
        "/Patient/_history", params={"_at": updated["meta"]["lastUpdated"]}
    ).json()
    assert [e["resource"]["gender"] for e in at_second["entry"]] == ["male"]


@pytest.mark.usefixtures("empty_store")
def test_paging_walks_every_version_once_even_with_writes_in_between(client: httpx.Client) -> None:
    ids = {create(client, patient())["id"] for _ in range(7)}
    page = client.get("/Patient/_history", params={"_count": 3}).json()
    seen: list[str] = []
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        create(client, patient())  # a write after the first page must not shift later pages
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = httpx.get(following[0]).json()
    assert sorted(seen) == sorted(ids)


def test_bad_since_is_400_naming_the_parameter(client: httpx.Client) -> None:
    response = client.get("/_history", params={"_since": "last tuesday"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_since"]


def test_bad_count_is_400(client: httpx.Client) -> None:
    assert client.get("/_history", params={"_count": "-1"}).status_code == 400
