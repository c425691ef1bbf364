"""Search by every parameter type, modifier and prefix, on resources made for each test (R4 search.html).

Each test tags its resources with a fresh code so that other tests' data never matches.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support import create, observation, patient, unique

Params = list[tuple[str, str | int | float | bool | None]] | dict[str, str]


def ids(client: httpx.Client, path: str, params: Params) -> set[str]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return {
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e["search"]["mode"] == "match"
    }


@pytest.fixture
def tag() -> str:
    return unique("tag")


def tagged(resource: dict[str, Any], tag: str) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": "urn:test", "code": tag}]}}


def test_token_forms_on_codeable_concepts(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    a = create(
        client,
        tagged(
            observation(
                f"Patient/{p}",
                code={
                    "coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                    "text": "Heart rate",
                },
            ),
            tag,
        ),
    )["id"]
    b = create(
        client, tagged(observation(f"Patient/{p}", code={"coding": [{"code": "local-1"}]}), tag)
    )["id"]
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Observation", [t, ("code", "http://loinc.org|8867-4")]) == {a}
    assert ids(client, "/Observation", [t, ("code", "8867-4")]) == {a}
    assert ids(client, "/Observation", [t, ("code", "|local-1")]) == {b}
    assert ids(client, "/Observation", [t, ("code", "http://loinc.org|")]) == {a}
    assert ids(client, "/Observation", [t, ("code", "8867-4,local-1")]) == {a, b}
    assert ids(client, "/Observation", [t, ("code:not", "8867-4")]) == {b}
    assert ids(client, "/Observation", [t, ("code:text", "heart")]) == {a}


def test_token_on_boolean_and_code(client: httpx.Client) -> None:
    family = unique("Fam")
    active = create(client, patient(active=True, name=[{"family": family}]))["id"]
    inactive = create(client, patient(active=False, name=[{"family": family}], gender="male"))["id"]
    assert ids(client, "/Patient", {"family": family, "active": "true"}) == {active}
    assert ids(client, "/Patient", {"family": family, "gender": "male"}) == {inactive}


def test_string_starts_with_ignoring_case_and_accents_exact_and_contains(
    client: httpx.Client,
) -> None:
    stem = unique("Zz").replace("-", "")
    muller = create(client, patient(name=[{"family": f"{stem}Müller", "given": ["Jürgen"]}]))["id"]
    create(client, patient(name=[{"family": f"{stem}Mueller"}]))
    assert ids(client, "/Patient", {"family": f"{stem.lower()}MULLER"}) == {muller}
    assert ids(client, "/Patient", {"family:exact": f"{stem}Müller"}) == {muller}
    assert ids(client, "/Patient", {"family:exact": f"{stem}muller"}) == set()
    assert ids(client, "/Patient", {"name:contains": "ller", "family": stem}) == {muller} | ids(
        client, "/Patient", {"family": f"{stem}Mue"}
    )
    assert muller in ids(client, "/Patient", {"name": "jurg", "family": stem})


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", {"in"}),
        ("ne", {"before", "after"}),
        ("gt", {"after"}),
        ("lt", {"before"}),
        ("ge", {"in", "after"}),
        ("le", {"in", "before"}),
        ("sa", {"after"}),
        ("eb", {"before"}),
    ],
)
def test_date_prefixes_against_a_day(client: httpx.Client, prefix: str, expected: set[str]) -> None:
    family = unique("Date")
    made = {
        label: create(client, patient(name=[{"family": family}], birthDate=day))["id"]
        for label, day in (("before", "2001-03-03"), ("in", "2001-03-04"), ("after", "2001-03-05"))
    }
    found = ids(client, "/Patient", {"family": family, "birthdate": f"{prefix}2001-03-04"})
    assert found == {made[label] for label in expected}


def test_date_precision_a_year_contains_its_days(client: httpx.Client) -> None:
    family = unique("Year")
    inside = create(client, patient(name=[{"family": family}], birthDate="1987-06-15"))["id"]
    create(client, patient(name=[{"family": family}], birthDate="1988-01-01"))
    assert ids(client, "/Patient", {"family": family, "birthdate": "1987"}) == {inside}
    assert ids(client, "/Patient", {"family": family, "birthdate": "1987-06"}) == {inside}


def test_period_dates_overlap_semantics(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    enc = tagged(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{p}"},
            "period": {"start": "2020-01-10", "end": "2020-01-20"},
        },
        tag,
    )
    e = create(client, enc)["id"]
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Encounter", [t, ("date", "2020-01")]) == {
        e
    }  # the month contains the period
    assert (
        ids(client, "/Encounter", [t, ("date", "2020-01-15")]) == set()
    )  # a day inside does not contain it
    assert ids(client, "/Encounter", [t, ("date", "gt2020-01-15")]) == {
        e
    }  # it extends beyond the day
    assert ids(client, "/Encounter", [t, ("date", "lt2020-01-15")]) == {e}  # and starts before it
    assert ids(client, "/Encounter", [t, ("date", "sa2020-01-09")]) == {e}
    assert ids(client, "/Encounter", [t, ("date", "eb2020-01-21")]) == {e}


def test_quantity_value_units_and_ucum_conversion(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    ucum = "http://unitsofmeasure.org"
    glucose = tagged(
        observation(
            f"Patient/{p}",
            valueQuantity={"value": 100, "unit": "mg/dL", "system": ucum, "code": "mg/dL"},
        ),
        tag,
    )
    g = create(client, glucose)["id"]
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Observation", [t, ("value-quantity", f"100|{ucum}|mg/dL")]) == {g}
    assert ids(client, "/Observation", [t, ("value-quantity", f"1|{ucum}|g/L")]) == {
        g
    }  # same amount, other unit
    assert ids(client, "/Observation", [t, ("value-quantity", "gt99||mg/dL")]) == {g}
    assert ids(client, "/Observation", [t, ("value-quantity", "lt99")]) == set()
    assert (
        ids(client, "/Observation", [t, ("value-quantity", "100.4")]) == set()
    )  # precision: [100.35, 100.45)
    assert ids(client, "/Observation", [t, ("value-quantity", "1e2")]) == {
        g
    }  # precision: [50, 150)


def test_number_precision_and_prefixes(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    risk = tagged(
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": f"Patient/{p}"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
        tag,
    )
    r = create(client, risk)["id"]
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/RiskAssessment", [t, ("probability", "0.25")]) == {r}
    assert ids(client, "/RiskAssessment", [t, ("probability", "0.3")]) == {
        r
    }  # 0.3 covers [0.25, 0.35)
    assert ids(client, "/RiskAssessment", [t, ("probability", "0.4")]) == set()
    assert ids(client, "/RiskAssessment", [t, ("probability", "gt0.2")]) == {r}
    assert ids(client, "/RiskAssessment", [t, ("probability", "le0.2")]) == set()


def test_reference_forms_and_type_modifier(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    o = create(client, tagged(observation(f"Patient/{p}"), tag))["id"]
    t = ("_tag", f"urn:test|{tag}")
    for value in (
        p,
        f"Patient/{p}",
        f"{client.base_url}/Patient/{p}".replace("//Patient", "/Patient"),
    ):
        assert ids(client, "/Observation", [t, ("subject", value)]) == {o}, value
    assert ids(client, "/Observation", [t, ("subject:Patient", p)]) == {o}
    assert ids(client, "/Observation", [t, ("patient", p)]) == {o}
    assert ids(client, "/Observation", [t, ("subject", "Group/" + p)]) == set()


def test_missing_modifier(client: httpx.Client) -> None:
    family = unique("Miss")
    with_date = create(client, patient(name=[{"family": family}]))["id"]
    without = create(client, {"resourceType": "Patient", "name": [{"family": family}]})["id"]
    assert ids(client, "/Patient", {"family": family, "birthdate:missing": "true"}) == {without}
    assert ids(client, "/Patient", {"family": family, "birthdate:missing": "false"}) == {with_date}


def test_chains_one_and_two_levels(client: httpx.Client, tag: str) -> None:
    doctor_name = unique("Doc")
    doctor = create(client, {"resourceType": "Practitioner", "name": [{"family": doctor_name}]})[
        "id"
    ]
    family = unique("Chain")
    p = create(
        client,
        patient(
            name=[{"family": family}], generalPractitioner=[{"reference": f"Practitioner/{doctor}"}]
        ),
    )["id"]
    o = create(client, tagged(observation(f"Patient/{p}"), tag))["id"]
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Observation", [t, ("subject:Patient.name", family)]) == {o}
    assert ids(client, "/Observation", [t, ("subject.family", family)]) == {o}
    assert ids(
        client, "/Observation", [t, ("subject:Patient.general-practitioner.name", doctor_name)]
    ) == {o}
    assert ids(client, "/Observation", [t, ("subject:Patient.name", "nobody-like-this")]) == set()


def test_reverse_chain_has(client: httpx.Client) -> None:
    family = unique("Has")
    code = unique("code")
    p1 = create(client, patient(name=[{"family": family}]))["id"]
    create(client, patient(name=[{"family": family}]))
    create(
        client, observation(f"Patient/{p1}", code={"coding": [{"system": "urn:c", "code": code}]})
    )
    assert ids(client, "/Patient", {"family": family, "_has:Observation:patient:code": code}) == {
        p1
    }
    assert ids(
        client, "/Patient", {"family": family, "_has:Observation:subject:code": "urn:c|" + code}
    ) == {p1}


def test_includes_and_revincludes(client: httpx.Client, tag: str) -> None:
    p = create(client, patient())["id"]
    o = create(client, tagged(observation(f"Patient/{p}"), tag))["id"]
    bundle = client.get(
        "/Observation", params=[("_tag", f"urn:test|{tag}"), ("_include", "Observation:subject")]
    ).json()
    modes = {
        (e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"]
        for e in bundle["entry"]
    }
    assert modes == {("Observation", o): "match", ("Patient", p): "include"}
    assert bundle["total"] == 1  # includes do not count
    back = client.get(
        "/Patient", params=[("_id", p), ("_revinclude", "Observation:subject")]
    ).json()
    assert {(e["resource"]["resourceType"], e["search"]["mode"]) for e in back["entry"]} == {
        ("Patient", "match"),
        ("Observation", "include"),
    }


def test_sort_ascending_descending_and_by_two_keys(client: httpx.Client) -> None:
    family = unique("Sort")
    made = [
        create(client, patient(name=[{"family": family, "given": [g]}], birthDate=d))["id"]
        for g, d in (("b", "1990-01-01"), ("a", "1990-01-01"), ("c", "1980-01-01"))
    ]

    def order(sort: str) -> list[str]:
        bundle = client.get("/Patient", params={"family": family, "_sort": sort}).json()
        return [e["resource"]["id"] for e in bundle["entry"]]

    assert order("birthdate,given") == [made[2], made[1], made[0]]
    assert order("-birthdate,given") == [made[1], made[0], made[2]]


def test_identifier_of_type(client: httpx.Client) -> None:
    value = unique("mrn")
    p = create(
        client,
        patient(
            identifier=[
                {
                    "system": "urn:h",
                    "value": value,
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "MR",
                            }
                        ]
                    },
                }
            ]
        ),
    )["id"]
    found = ids(
        client,
        "/Patient",
        {"identifier:of-type": f"http://terminology.hl7.org/CodeSystem/v2-0203|MR|{value}"},
    )
    assert found == {p}


@pytest.mark.parametrize(
    "params",
    [
        {"birthdate": "xx2000"},
        {"family:fuzzy": "x"},
        {"general-practitioner.nothing": "1"},
        {"_has:Observation:patient": "1"},
        {"_has:Nope:patient:code": "1"},
        {"_sort": "unknown-param"},
        {"_include": "Observation"},
        {"identifier:of-type": "just-a-value"},
        {"gender:missing": "maybe"},
        {"birthdate:contains": "2000"},
    ],
)
def test_malformed_search_is_400_naming_the_parameter(
    client: httpx.Client, params: dict[str, str]
) -> None:
    response = client.get("/Patient", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"]


def test_composite_components_must_match_on_the_same_element(
    client: httpx.Client, tag: str
) -> None:
    p = create(client, patient())["id"]
    ucum = "http://unitsofmeasure.org"

    def component(code: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "system": ucum, "code": "mm[Hg]"},
        }

    bp = observation(
        f"Patient/{p}", code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    )
    del bp["valueQuantity"]
    bp["component"] = [component("8480-6", 150), component("8462-4", 80)]
    o = create(client, tagged(bp, tag))["id"]
    t = ("_tag", f"urn:test|{tag}")
    systolic_high = "http://loinc.org|8480-6$gt140"
    assert ids(client, "/Observation", [t, ("component-code-value-quantity", systolic_high)]) == {o}
    # 150 belongs to the systolic component, not the diastolic one: no match across elements.
    diastolic_high = "http://loinc.org|8462-4$gt140"
    assert (
        ids(client, "/Observation", [t, ("component-code-value-quantity", diastolic_high)]) == set()
    )
    either = f"{diastolic_high},{systolic_high}"
    assert ids(client, "/Observation", [t, ("component-code-value-quantity", either)]) == {o}
    ucum_value = f"http://loinc.org|8462-4$80|{ucum}|mm[Hg]"
    assert ids(client, "/Observation", [t, ("component-code-value-quantity", ucum_value)]) == {o}
    bad = client.get("/Observation", params={"component-code-value-quantity": "only-one-part"})
    assert bad.status_code == 400


def test_near_finds_locations_within_the_distance(client: httpx.Client, tag: str) -> None:
    def place(lat: float, lon: float) -> str:
        body = tagged(
            {
                "resourceType": "Location",
                "name": "x",
                "position": {"latitude": lat, "longitude": lon},
            },
            tag,
        )
        return str(create(client, body)["id"])

    boston = place(42.3601, -71.0589)
    cambridge = place(42.3736, -71.1097)  # about 4.4 km from Boston
    worcester = place(42.2626, -71.8023)  # about 62 km
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Location", [t, ("near", "42.3601|-71.0589|10|km")]) == {boston, cambridge}
    assert ids(client, "/Location", [t, ("near", "42.3601|-71.0589|1|km")]) == {boston}
    assert ids(client, "/Location", [t, ("near", "42.3601|-71.0589|50|[mi_i]")]) == {
        boston,
        cambridge,
        worcester,
    }
    assert client.get("/Location", params={"near": "95|0"}).status_code == 400


def test_list_finds_the_resources_a_list_names(client: httpx.Client) -> None:
    a, b, _ = (create(client, patient())["id"] for _ in range(3))
    entries = [{"item": {"reference": f"Patient/{x}"}} for x in (a, b)]
    listed = create(
        client, {"resourceType": "List", "status": "current", "mode": "working", "entry": entries}
    )["id"]
    assert ids(client, "/Patient", {"_list": listed}) == {a, b}


def test_content_and_text_search_words_in_the_resource_and_narrative(client: httpx.Client) -> None:
    word = unique("zebra")
    narrative = {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Allergic to {word}</div>',
    }
    with_text = create(client, patient(text=narrative))["id"]
    in_content = create(client, patient(name=[{"family": word}]))["id"]
    assert ids(client, "/Patient", {"_text": word.upper()}) == {with_text}
    assert ids(client, "/Patient", {"_content": word}) == {with_text, in_content}


def test_defined_but_unindexable_parameter_is_refused_not_ignored(client: httpx.Client) -> None:
    response = client.get("/Patient", params={"_query": "x"})
    assert response.status_code == 400


def test_in_and_not_in_use_a_stored_value_set(client: httpx.Client, tag: str) -> None:
    url = f"http://example.org/fhir/ValueSet/{unique('vs')}"
    valueset = {
        "resourceType": "ValueSet",
        "url": url,
        "status": "active",
        "compose": {
            "include": [
                {"system": "http://loinc.org", "concept": [{"code": "8867-4"}, {"code": "8480-6"}]}
            ]
        },
    }
    create(client, valueset)
    p = create(client, patient())["id"]

    def obs(code: str) -> str:
        body = observation(
            f"Patient/{p}", code={"coding": [{"system": "http://loinc.org", "code": code}]}
        )
        return str(create(client, tagged(body, tag))["id"])

    pulse, systolic, weight = obs("8867-4"), obs("8480-6"), obs("29463-7")
    t = ("_tag", f"urn:test|{tag}")
    assert ids(client, "/Observation", [t, ("code:in", url)]) == {pulse, systolic}
    assert ids(client, "/Observation", [t, ("code:not-in", url)]) == {weight}
    unknown = client.get("/Observation", params={"code:in": "http://example.org/no-such-valueset"})
    assert unknown.status_code == 400
    whole_system = {
        "resourceType": "ValueSet",
        "url": url + "-all",
        "status": "active",
        "compose": {"include": [{"system": "http://loinc.org"}]},
    }
    create(client, whole_system)
    assert client.get("/Observation", params={"code:in": url + "-all"}).status_code == 400


@pytest.mark.parametrize("value", ["1e1000000", "gt-1e5000", "NaN", "Infinity"])
def test_numbers_beyond_comparison_are_400(client: httpx.Client, value: str) -> None:
    response = client.get("/RiskAssessment", params={"probability": value})
    assert response.status_code == 400


def test_paging_stays_correct_under_concurrent_writes(client: httpx.Client, tag: str) -> None:
    def make() -> str:
        return str(create(client, tagged(patient(), tag))["id"])

    original = [make() for _ in range(9)]
    page = client.get("/Patient", params={"_tag": f"urn:test|{tag}", "_count": 3}).json()
    seen: list[str] = []
    pages = []
    while True:
        batch = [e["resource"]["id"] for e in page.get("entry", [])]
        seen += batch
        pages.append((page, batch))
        # Between pages: new resources (random ids land before and after the cursor), an
        # update of one not yet seen, and the delete of one already seen.
        make()
        unseen = [i for i in original if i not in seen]
        if unseen:
            current = client.get(f"/Patient/{unseen[0]}").json()
            client.put(
                f"/Patient/{unseen[0]}",
                json=dict(current, gender="male"),
                headers={"Content-Type": "application/fhir+json"},
            )
        client.delete(f"/Patient/{batch[-1]}")
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = httpx.get(nxt[0]).json()
    assert len(seen) == len(set(seen))  # no duplicates
    assert set(original) <= set(seen)  # no misses
    second, second_ids = pages[1]
    previous = [link["url"] for link in second["link"] if link["relation"] == "previous"]
    back = httpx.get(previous[0]).json()
    # The page before the second: the three resources now just before its first one.
    everything = client.get("/Patient", params={"_tag": f"urn:test|{tag}", "_count": 100}).json()
    in_order = [e["resource"]["id"] for e in everything["entry"]]
    expected = in_order[: in_order.index(second_ids[0])][-3:]  # the server's order, not Python's
    assert [e["resource"]["id"] for e in back["entry"]] == expected


def test_bad_paging_cursor_is_400(client: httpx.Client) -> None:
    assert client.get("/Patient", params={"__after": "no-slash"}).status_code == 400
