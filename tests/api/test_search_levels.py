"""Search at system and compartment level, and Patient/$everything (R4 http.html#search, patient-operation-everything)."""

from __future__ import annotations

import httpx

from support import create, observation, patient, unique


def _found(bundle: dict[str, object]) -> set[tuple[str, str]]:
    entries = bundle.get("entry", [])
    assert isinstance(entries, list)
    return {
        (e["resource"]["resourceType"], e["resource"]["id"])
        for e in entries
        if e["search"]["mode"] == "match"
    }


def test_system_search_spans_the_types_named_by_type(client: httpx.Client) -> None:
    tag = unique("sys")
    meta = {"tag": [{"system": "urn:test", "code": tag}]}
    p = create(client, patient(meta=meta))["id"]
    o = create(client, observation(f"Patient/{p}", meta=meta))["id"]
    org = create(client, {"resourceType": "Organization", "name": "X", "meta": meta})["id"]
    every = client.get("", params={"_tag": f"urn:test|{tag}"}).json()
    assert _found(every) == {("Patient", p), ("Observation", o), ("Organization", org)}
    some = client.get("", params={"_tag": f"urn:test|{tag}", "_type": "Patient,Observation"}).json()
    assert _found(some) == {("Patient", p), ("Observation", o)}
    assert client.get("", params={"_type": "Nope"}).status_code == 400


def test_compartment_search_finds_only_that_patients_resources(client: httpx.Client) -> None:
    mine = create(client, patient())["id"]
    other = create(client, patient())["id"]
    a = create(client, observation(f"Patient/{mine}"))["id"]
    create(client, observation(f"Patient/{other}"))
    # In the compartment through performer, not subject: the reference index must find it.
    b = create(
        client, observation(f"Patient/{other}", performer=[{"reference": f"Patient/{mine}"}])
    )["id"]
    bundle = client.get(f"/Patient/{mine}/Observation").json()
    assert _found(bundle) == {("Observation", a), ("Observation", b)}
    coded = client.get(f"/Patient/{mine}/Observation", params={"code": "8867-4", "_id": a}).json()
    assert _found(coded) == {("Observation", a)}
    assert bundle["link"][0]["url"].split("?")[0].endswith(f"/Patient/{mine}/Observation")


def test_everything_returns_the_record_and_what_it_refers_to_but_no_one_elses(
    client: httpx.Client,
) -> None:
    org = create(client, {"resourceType": "Organization", "name": unique("Clinic")})["id"]
    other = create(client, patient())["id"]
    me = create(
        client,
        patient(
            managingOrganization={"reference": f"Organization/{org}"},
            link=[{"other": {"reference": f"Patient/{other}"}, "type": "seealso"}],
        ),
    )["id"]
    obs = create(client, observation(f"Patient/{me}"))["id"]
    create(client, observation(f"Patient/{other}"))
    bundle = client.get(f"/Patient/{me}/$everything").json()
    found = _found(bundle)
    assert {("Patient", me), ("Observation", obs), ("Organization", org)} <= found
    assert ("Patient", other) not in found  # referred to, but another patient's record
    assert all(t != "Observation" or i == obs for t, i in found)
    only_obs = client.get(f"/Patient/{me}/$everything", params={"_type": "Observation"}).json()
    assert _found(only_obs) == {("Observation", obs)}
    later = client.get(
        f"/Patient/{me}/$everything", params={"_since": "2999-01-01T00:00:00Z"}
    ).json()
    assert _found(later) == set()


def test_everything_pages(client: httpx.Client) -> None:
    me = create(client, patient())["id"]
    made = {create(client, observation(f"Patient/{me}"))["id"] for _ in range(5)}
    page = client.get(f"/Patient/{me}/$everything", params={"_count": 2}).json()
    seen: set[tuple[str, str]] = set()
    while True:
        seen |= _found(page)
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = httpx.get(nxt[0]).json()
    assert {("Observation", o) for o in made} | {("Patient", me)} == seen


def test_everything_of_unknown_patient_is_404(client: httpx.Client) -> None:
    assert client.get("/Patient/no-such-patient/$everything").status_code == 404


def test_everything_pages_by_cursor_so_writes_between_pages_skip_or_repeat_nothing(
    client: httpx.Client,
) -> None:
    me = create(client, patient())["id"]
    made = sorted(create(client, observation(f"Patient/{me}"))["id"] for _ in range(6))
    first = client.get(f"/Patient/{me}/$everything", params={"_count": 3}).json()
    seen = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in first["entry"]]
    assert seen == [("Observation", o) for o in made[:3]]  # (type, id) order
    # Between pages: one already shown is deleted; an offset would now skip one.
    assert client.delete(f"/Observation/{made[0]}").status_code in (200, 204)
    page = first
    while nxt := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        assert "__after=" in nxt[0] and "__offset" not in nxt[0]
        page = httpx.get(nxt[0]).json()
        seen += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in page["entry"]]
    assert seen == [("Observation", o) for o in made] + [("Patient", me)]
    back = [link["url"] for link in page["link"] if link["relation"] == "previous"]
    previous = httpx.get(back[0]).json()
    assert [e["resource"]["id"] for e in previous["entry"]] == made[3:6]


def test_a_count_of_zero_answers_with_the_total_alone(client: httpx.Client) -> None:
    """_count=0: no entries, and the number of matches (R5 search.html#count, as
    _summary=count gives it); never a total of 0 for matches it did not fetch."""
    me = create(client, patient())["id"]
    create(client, observation(f"Patient/{me}"))
    create(client, observation(f"Patient/{me}"))
    asks = [
        ("/Observation", {"subject": f"Patient/{me}", "_count": "0"}, 2),
        ("/Observation", {"subject": f"Patient/{me}", "_count": "0", "_sort": "-date"}, 2),
        (f"/Patient/{me}/$everything", {"_count": "0"}, 3),  # the Patient and both
    ]
    for path, params, expected in asks:
        bundle = client.get(path, params=params).json()
        assert bundle.get("total") == expected, (path, params)
        assert "entry" not in bundle
        assert not [k for k in bundle["link"] if k["relation"] == "next"]
    counted = client.get("/Observation", params={"subject": f"Patient/{me}", "_summary": "count"})
    assert counted.json()["total"] == 2
    # _total=none still says nothing of the total.
    quiet = client.get(
        "/Observation", params={"subject": f"Patient/{me}", "_count": "0", "_total": "none"}
    ).json()
    assert "total" not in quiet and "entry" not in quiet
