"""Paging a ``_sort``-ed search by cursor (R4 search.html#sort, #paging; issue 3 item 5).

Each test tags its resources with a fresh code so that other tests' data never matches.
The pages are followed by their own next/previous links, as a client would.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from conftest import ServerThread
from support import create, issue_expressions, observation, patient, unique

Params = list[tuple[str, str]]


def tagged(resource: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": "urn:test", "code": tag}]}}


def get(client: httpx.Client, url: str, params: Params | None = None) -> dict[str, Any]:
    response = client.get(url, params=tuple(params) if params else None)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def matches(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def relation(bundle: dict[str, Any], name: str) -> str | None:
    urls = [link["url"] for link in bundle["link"] if link["relation"] == name]
    return urls[0] if urls else None


def one_page(client: httpx.Client, path: str, params: Params) -> list[str]:
    return matches(get(client, path, [*params, ("_count", "1000")]))


def pages(client: httpx.Client, path: str, params: Params, count: int) -> list[list[str]]:
    """Every page, first to last, by next links."""
    bundle = get(client, path, [*params, ("_count", str(count))])
    found = [matches(bundle)]
    while (url := relation(bundle, "next")) is not None:
        bundle = get(client, url)
        found.append(matches(bundle))
    return found


def pages_back(client: httpx.Client, path: str, params: Params, count: int) -> list[list[str]]:
    """Every page by previous links, from the last page back to the first."""
    bundle = get(client, path, [*params, ("_count", str(count))])
    while (url := relation(bundle, "next")) is not None:
        bundle = get(client, url)
    found = [matches(bundle)]
    while (url := relation(bundle, "previous")) is not None:
        bundle = get(client, url)
        found.append(matches(bundle))
    return found


def flat(batches: list[list[str]]) -> list[str]:
    return [i for batch in batches for i in batch]


@pytest.fixture(scope="module")
def data(server: ServerThread) -> tuple[str, list[str]]:
    """Observations whose sort values repeat, are missing, and are of every sortable type:
    token (code), date (effective, an open Period ends at infinity), quantity, reference
    (subject), plus _lastUpdated and _id."""
    client = httpx.Client(base_url=server.base, timeout=30)
    tag = unique("sortpage")
    patients = [create(client, patient())["id"] for _ in range(3)]
    made = []
    for n in range(14):
        body = observation(f"Patient/{patients[n % 3]}")
        body["code"] = {"coding": [{"system": "http://loinc.org", "code": f"c{n % 4}"}]}
        if n % 5 == 4:
            del body["subject"]
        if n % 6 == 5:
            del body["valueQuantity"]
        else:
            body["valueQuantity"] = {
                "value": [1.5, 1.50, -2, 10.125, 3][n % 5],
                "unit": "mg",
                "system": "http://unitsofmeasure.org",
                "code": "mg",
            }
        if n % 7 == 3:
            body["effectivePeriod"] = {"start": "2021-03-04T05:06:07.123+02:00"}  # open end
        elif n % 4 != 2:
            body["effectiveDateTime"] = [
                "2020-01-01",
                "2020-01-01T10:00:00.5Z",
                "2019-12-31T23:59:59.999-05:00",
            ][n % 3]
        made.append(create(client, tagged(body, tag))["id"])
    client.close()
    return tag, made


SORTS = [
    "date",
    "-date",
    "code,-date",
    "-code,value-quantity,subject",
    "value-quantity,-_lastUpdated",
    "-value-quantity,code",
    "subject,-code,date",
    "-subject",
    "_lastUpdated",
    "-_id",
    "code,_id",
]


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("count", [1, 3, 5])
def test_sorted_pages_together_are_the_one_big_page(
    client: httpx.Client, data: tuple[str, list[str]], sort: str, count: int
) -> None:
    tag, made = data
    params = [("_tag", f"urn:test|{tag}"), ("_sort", sort)]
    whole = one_page(client, "/Observation", params)
    assert sorted(whole) == sorted(made)
    forward = pages(client, "/Observation", params, count)
    assert flat(forward) == whole
    assert all(len(batch) == count for batch in forward[:-1])
    backward = pages_back(client, "/Observation", params, count)
    assert flat(list(reversed(backward))) == whole


def test_several_keys_mixed_directions_missing_values_last(client: httpx.Client) -> None:
    """-birthdate,family: latest birth first, the ones without a birthDate last; within a
    date, families ascending, the ones without a family last; then by id."""
    tag = unique("sortmix")
    rows = [
        ("1990-05-05", "beta"),
        ("1990-05-05", None),
        ("1990-05-05", "alpha"),
        (None, "alpha"),
        ("1985-01-01", "gamma"),
        (None, None),
        ("2001-02-03", "alpha"),
        ("1985-01-01", "alpha"),
        (None, "beta"),
    ]
    made: dict[str, tuple[str | None, str | None]] = {}
    for birth, family in rows:
        body = patient()
        del body["birthDate"]
        body["name"] = [{"given": ["X"]}]
        if birth is not None:
            body["birthDate"] = birth
        if family is not None:
            body["name"] = [{"family": family, "given": ["X"]}]
        made[create(client, tagged(body, tag))["id"]] = (birth, family)

    def key(item: tuple[str, tuple[str | None, str | None]]) -> tuple[Any, ...]:
        id, (birth, family) = item
        # Descending birth: negate the date's ordinal; missing values sort last either way.
        year, month, day = map(int, birth.split("-")) if birth else (0, 0, 0)
        return (birth is None, -(year * 10000 + month * 100 + day), family is None, family, id)

    expected = [id for id, _ in sorted(made.items(), key=key)]
    params = [("_tag", f"urn:test|{tag}"), ("_sort", "-birthdate,family")]
    assert one_page(client, "/Patient", params) == expected
    for count in (1, 2, 4):
        assert flat(pages(client, "/Patient", params, count)) == expected
        assert flat(list(reversed(pages_back(client, "/Patient", params, count)))) == expected


@pytest.mark.parametrize("sort", ["-_lastUpdated", "_lastUpdated", "-birthdate,family", "gender"])
def test_writes_between_sorted_pages_never_duplicate_or_skip(
    client: httpx.Client, sort: str
) -> None:
    """Between pages: new resources whose values land before and after the cursor, the
    delete of one already shown and of one not yet shown. Every unmodified resource is
    shown exactly once (offset paging shows one twice when a row is added before it)."""
    tag = unique("sortwrite")
    births = ["1970-01-01", "1980-06-15", "1990-12-31", "2000-02-29", "1960-07-04"]

    def make(n: int) -> str:
        body = patient(
            birthDate=births[n % 5],
            gender=["male", "female", "other"][n % 3],
            name=[{"family": f"f{n % 4}", "given": ["Y"]}],
        )
        return str(create(client, tagged(body, tag))["id"])

    original = [make(n) for n in range(12)]
    params = [("_tag", f"urn:test|{tag}"), ("_sort", sort), ("_count", "3")]
    bundle = get(client, "/Patient", params)
    seen: list[str] = []
    deleted: set[str] = set()
    n = 100
    while True:
        batch = matches(bundle)
        seen += batch
        unseen = [i for i in original if i not in seen and i not in deleted]
        if not unseen:
            break  # (ascending _lastUpdated: what is added now would always come next)
        for _ in range(3):
            make(n)
            n += 1
        client.delete(f"/Patient/{batch[0]}")
        if len(unseen) > 1:
            client.delete(f"/Patient/{unseen[-1]}")
            deleted.add(unseen[-1])
        url = relation(bundle, "next")
        if url is None:
            break
        bundle = get(client, url)
    assert len(seen) == len(set(seen))  # no duplicates
    assert set(original) - deleted <= set(seen)  # no misses
    assert not deleted & set(seen)


def test_previous_link_is_the_page_before(
    client: httpx.Client, data: tuple[str, list[str]]
) -> None:
    tag, _ = data
    params = [("_tag", f"urn:test|{tag}"), ("_sort", "-code,value-quantity"), ("_count", "4")]
    first = get(client, "/Observation", params)
    assert relation(first, "previous") is None
    url = relation(first, "next")
    assert url is not None
    second = get(client, url)
    url = relation(second, "next")
    assert url is not None
    third = get(client, url)
    back = relation(third, "previous")
    assert back is not None
    again = get(client, back)
    assert matches(again) == matches(second)
    back = relation(again, "previous")
    assert back is not None
    assert matches(get(client, back)) == matches(first)
    # The self link repeats the page it names.
    own = relation(third, "self")
    assert own is not None
    assert matches(get(client, own)) == matches(third)


def test_total_and_includes_on_every_sorted_page(
    client: httpx.Client, data: tuple[str, list[str]]
) -> None:
    tag, made = data
    params = [
        ("_tag", f"urn:test|{tag}"),
        ("_sort", "subject,date"),
        ("_total", "accurate"),
        ("_include", "Observation:subject"),
        ("_count", "4"),
    ]
    bundle = get(client, "/Observation", params)
    while True:
        assert bundle["total"] == len(made)
        subjects = {
            e["resource"]["subject"]["reference"].split("/")[1]
            for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match" and "subject" in e["resource"]
        }
        included = {
            e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "include"
        }
        assert included == subjects
        url = relation(bundle, "next")
        if url is None:
            break
        bundle = get(client, url)
    counted = get(client, "/Observation", [*params, ("_summary", "count")])
    assert counted["total"] == len(made)
    assert "entry" not in counted


def test_old_offset_links_still_page(client: httpx.Client, data: tuple[str, list[str]]) -> None:
    tag, _ = data
    params = [("_tag", f"urn:test|{tag}"), ("_sort", "date,code")]
    whole = one_page(client, "/Observation", params)
    bundle = get(client, "/Observation", [*params, ("_count", "4"), ("__offset", "4")])
    assert matches(bundle) == whole[4:8]
    url = relation(bundle, "next")
    assert url is not None and "__offset" not in url  # from here on, cursors
    assert matches(get(client, url)) == whole[8:12]
    back = relation(bundle, "previous")
    assert back is not None
    assert matches(get(client, back)) == whole[:4]


def _cursor(body: Any) -> str:
    raw = json.dumps(body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _made(client: httpx.Client, data: tuple[str, list[str]], sort: str) -> str:
    """A real next link's cursor, to tamper with."""
    tag, _ = data
    bundle = get(
        client, "/Observation", [("_tag", f"urn:test|{tag}"), ("_sort", sort), ("_count", "2")]
    )
    url = relation(bundle, "next")
    assert url is not None
    return str(httpx.URL(url).params["__after"])


BAD_CURSORS = {
    "default-order cursor": "Observation/1",
    "not base64url": "!!!",
    "not JSON": "bm90IGpzb24",
    "not an object": _cursor([1, 2]),
    "no id": _cursor({"s": "value-quantity", "k": ["1"], "t": "Observation"}),
    "another _sort": _cursor({"s": "date", "k": ["1"], "t": "Observation", "i": "x"}),
    "two values for one key": _cursor(
        {"s": "value-quantity", "k": ["1", "2"], "t": "Observation", "i": "x"}
    ),
    "exponent": _cursor({"s": "value-quantity", "k": ["1e5"], "t": "Observation", "i": "x"}),
    "NaN": _cursor({"s": "value-quantity", "k": ["NaN"], "t": "Observation", "i": "x"}),
    "JSON number": _cursor({"s": "value-quantity", "k": [1], "t": "Observation", "i": "x"}),
    "id not a string": _cursor({"s": "value-quantity", "k": ["1"], "t": "Observation", "i": 7}),
    "empty id": _cursor({"s": "value-quantity", "k": ["1"], "t": "Observation", "i": ""}),
    "NUL in type": _cursor({"s": "value-quantity", "k": ["1"], "t": "Obs\u0000", "i": "x"}),
}


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_malformed_sort_cursor_is_400_naming_it(
    client: httpx.Client, data: tuple[str, list[str]], cursor: str
) -> None:
    tag, _ = data
    for name in ("__after", "__before"):
        response = client.get(
            "/Observation",
            params=[("_tag", f"urn:test|{tag}"), ("_sort", "value-quantity"), (name, cursor)],
        )
        assert response.status_code == 400, response.text
        assert issue_expressions(response) == [name]


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("date", "2020-13-01 00:00:00"),
        ("date", "2020-02-30 00:00:00"),
        ("date", "2020-01-01T00:00:00Z"),
        ("date", "tomorrow"),
        ("code", "\u0000"),
        ("code", "\ud800"),
        ("-_lastUpdated", "epoch"),
    ],
)
def test_tampered_sort_value_is_400_not_a_database_error(
    client: httpx.Client, data: tuple[str, list[str]], sort: str, value: str
) -> None:
    tag, _ = data
    real = _made(client, data, sort)
    body = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    body["k"][0] = value
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate survives as \ud800
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = client.get(
        "/Observation",
        params=[("_tag", f"urn:test|{tag}"), ("_sort", sort), ("__after", cursor)],
    )
    assert response.status_code == 400, response.text
    assert issue_expressions(response) == ["__after"]


def test_a_cursor_only_positions_within_the_search(
    client: httpx.Client, data: tuple[str, list[str]]
) -> None:
    """A hand-made cursor positions; it selects nothing outside the search's own matches."""
    tag, made = data
    other = create(client, observation(f"Patient/{create(client, patient())['id']}"))["id"]
    cursor = _cursor({"s": "_id", "k": [None], "t": "A", "i": "0"})
    bundle = get(
        client,
        "/Observation",
        [("_tag", f"urn:test|{tag}"), ("_sort", "_id"), ("__before", cursor), ("_count", "100")],
    )
    # Before a null _id (which no row has): every row, but only the search's.
    assert sorted(matches(bundle)) == sorted(made)
    assert other not in matches(bundle)


def test_both_cursors_at_once_is_400(client: httpx.Client, data: tuple[str, list[str]]) -> None:
    real = _made(client, data, "code")
    response = client.get(
        "/Observation", params=[("_sort", "code"), ("__after", real), ("__before", real)]
    )
    assert response.status_code == 400
