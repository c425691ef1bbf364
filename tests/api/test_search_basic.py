"""Type-level search by _id, _lastUpdated and identifier; paging; lenient and strict handling."""

from __future__ import annotations

import httpx
import pytest

from support import create, patient, unique


def test_search_by_id_with_or_values(client: httpx.Client) -> None:
    a, b, _ = (create(client, patient()) for _ in range(3))
    bundle = client.get("/Patient", params={"_id": f"{a['id']},{b['id']}"}).json()
    assert bundle["type"] == "searchset"
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == sorted([a["id"], b["id"]])
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])
    assert all(e["fullUrl"].endswith(f"/Patient/{e['resource']['id']}") for e in bundle["entry"])


@pytest.mark.parametrize(
    ("system_value", "matches"),
    [("urn:a|{v}", True), ("{v}", True), ("urn:b|{v}", False), ("|{v}", False), ("urn:a|", True)],
)
def test_identifier_token_forms(client: httpx.Client, system_value: str, matches: bool) -> None:
    value = unique()
    created = create(client, patient(identifier=[{"system": "urn:a", "value": value}]))
    query = system_value.format(v=value)
    params = {"identifier": query, "_id": created["id"]}
    bundle = client.get("/Patient", params=params).json()
    assert (bundle["total"] == 1) is matches


def test_identifier_without_system_matches_the_no_system_form(client: httpx.Client) -> None:
    value = unique()
    create(client, patient(identifier=[{"value": value}]))
    assert client.get("/Patient", params={"identifier": f"|{value}"}).json()["total"] == 1


def test_last_updated_prefixes(client: httpx.Client) -> None:
    created = create(client, patient())
    stamp = created["meta"]["lastUpdated"]

    def hit(value: str) -> bool:
        bundle = client.get("/Patient", params={"_id": created["id"], "_lastUpdated": value}).json()
        return bool(bundle["total"])

    assert hit(stamp) and hit(f"eq{stamp}") and hit(f"ge{stamp}") and hit(f"le{stamp}")
    assert not hit(f"gt{stamp}") and not hit(f"lt{stamp}") and not hit(f"ne{stamp}")
    assert hit(stamp[:10]) and hit("gt2000-01-01") and not hit("lt2000") and hit("sa2000")
    assert hit(f"ap{stamp[:10]}") and not hit("eb2000")


def test_repeated_parameters_are_anded(client: httpx.Client) -> None:
    created = create(client, patient())
    bundle = client.get(
        "/Patient", params=[("_id", created["id"]), ("_lastUpdated", "lt2000-01-01")]
    ).json()
    assert bundle["total"] == 0


def test_paging_links_walk_all_results(client: httpx.Client) -> None:
    ids = [create(client, patient())["id"] for _ in range(5)]
    page = client.get("/Patient", params={"_id": ",".join(ids), "_count": 2}).json()
    seen = []
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = httpx.get(nxt[0]).json()
    assert sorted(seen) == sorted(ids)


def test_summary_count_returns_only_the_total(client: httpx.Client) -> None:
    ids = [create(client, patient())["id"] for _ in range(3)]
    bundle = client.get("/Patient", params={"_id": ",".join(ids), "_summary": "count"}).json()
    assert bundle["total"] == 3 and "entry" not in bundle


def test_summary_count_on_one_clause_skips_deleted_and_replaced_values_and_counts_once(
    client: httpx.Client,
) -> None:
    # One plain clause is counted from its index rows alone (no resource row visited):
    # a delete and an update must leave no rows behind, two matching values count once.
    value = unique()
    ident = {"system": "urn:count", "value": value}
    kept = [create(client, patient(identifier=[ident])) for _ in range(3)]
    twice = create(client, patient(identifier=[ident, {**ident, "use": "old"}]))
    assert client.delete(f"/Patient/{kept[0]['id']}").status_code in (200, 204)
    moved = {**kept[1], "identifier": [{"system": "urn:count", "value": unique()}]}
    assert client.put(f"/Patient/{kept[1]['id']}", json=moved).status_code == 200
    params = {"identifier": f"urn:count|{value}"}
    counted = client.get("/Patient", params=params | {"_summary": "count"}).json()
    listed = client.get("/Patient", params=params).json()
    assert counted["total"] == 2 and "entry" not in counted
    assert sorted(e["resource"]["id"] for e in listed["entry"]) == sorted(
        [kept[2]["id"], twice["id"]]
    )
    accurate = client.get("/Patient", params=params | {"_total": "accurate", "_count": 1}).json()
    assert accurate["total"] == 2


def test_total_accurate_on_a_partial_page(client: httpx.Client) -> None:
    ids = [create(client, patient())["id"] for _ in range(3)]
    bundle = client.get(
        "/Patient", params={"_id": ",".join(ids), "_count": 1, "_total": "accurate"}
    ).json()
    assert bundle["total"] == 3 and len(bundle["entry"]) == 1


def test_unknown_parameter_is_reported_under_lenient_handling(client: httpx.Client) -> None:
    bundle = client.get("/Patient", params={"shoe-size": "9"}).json()
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_unknown_parameter_is_400_under_strict_handling(client: httpx.Client) -> None:
    response = client.get(
        "/Patient", params={"shoe-size": "9"}, headers={"Prefer": "handling=strict"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"_lastUpdated": "xx2020"},
        {"_lastUpdated": "2020-13-45"},
        {"identifier": "|"},
        {"_id:exact": "1"},
        {"_count": "many"},
    ],
)
def test_malformed_values_are_400_naming_the_parameter(
    client: httpx.Client, params: dict[str, str]
) -> None:
    response = client.get("/Patient", params=params)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_post_search_gives_the_same_results_as_get(client: httpx.Client) -> None:
    created = create(client, patient())
    by_get = client.get("/Patient", params={"_id": created["id"]}).json()
    by_post = client.post("/Patient/_search", data={"_id": created["id"]}).json()
    assert [e["resource"] for e in by_get["entry"]] == [e["resource"] for e in by_post["entry"]]


def test_total_estimate_is_a_number_near_the_count(client: httpx.Client) -> None:
    ids = [create(client, patient())["id"] for _ in range(3)]
    bundle = client.get(
        "/Patient", params={"_id": ",".join(ids), "_count": 1, "_total": "estimate"}
    ).json()
    assert isinstance(bundle["total"], int)
    assert 0 <= bundle["total"] <= 100
    assert client.get("/Patient", params={"_total": "roughly"}).status_code == 400
