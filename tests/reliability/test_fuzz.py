"""Property-based fuzzing of bodies, headers and URLs: the server never answers 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ServerThread

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
element_names = st.sampled_from(
    [
        "id",
        "meta",
        "name",
        "given",
        "family",
        "gender",
        "birthDate",
        "identifier",
        "system",
        "value",
        "subject",
        "reference",
        "status",
        "code",
        "coding",
        "valueQuantity",
        "extension",
        "url",
        "contained",
        "resourceType",
        "_birthDate",
        "text",
        "div",
        "entry",
        "resource",
        "request",
        "method",
        "fullUrl",
    ]
)
resource_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=15)
    | st.sampled_from(
        [
            "Patient",
            "Observation",
            "urn:uuid:x",
            "Patient/1",
            "1970-01-01",
            "POST",
            "PUT",
            "transaction",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(element_names, children, max_size=6)
    ),
    max_leaves=30,
)


def _resource(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": kind, **body}


@FUZZ
@given(body=json_values)
def test_arbitrary_json_bodies_never_cause_a_500(server: ServerThread, body: Any) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = c.post("/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code < 500, r.text


@FUZZ
@given(
    kind=st.sampled_from(["Patient", "Observation", "Bundle"]),
    body=st.dictionaries(element_names, resource_like, max_size=6),
)
def test_resource_shaped_bodies_never_cause_a_500(
    server: ServerThread, kind: str, body: dict[str, Any]
) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        created = c.post(
            f"/{kind}",
            json=_resource(kind, body),
            headers={"Content-Type": "application/fhir+json"},
        )
        as_transaction = c.post(
            "", json=_resource(kind, body), headers={"Content-Type": "application/fhir+json"}
        )
    assert created.status_code < 500, created.text
    assert as_transaction.status_code < 500, as_transaction.text


@FUZZ
@given(
    segments=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/?#"),
            min_size=1,
            max_size=12,
        )
        | st.sampled_from(["Patient", "_history", "_search", "1", "$everything", "metadata"]),
        max_size=5,
    ),
    params=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "_id",
                    "_lastUpdated",
                    "identifier",
                    "_count",
                    "_summary",
                    "_elements",
                    "_since",
                    "_at",
                    "__offset",
                    "x",
                ]
            ),
            st.text(max_size=15),
        ),
        max_size=4,
    ),
    method=st.sampled_from(["GET", "DELETE", "HEAD"]),
)
def test_arbitrary_urls_never_cause_a_500(
    server: ServerThread,
    segments: list[str],
    params: list[tuple[str, str | int | float | bool | None]],
    method: str,
) -> None:
    path = "/".join(quote(s, safe="") for s in segments)
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = c.request(method, f"/{path}", params=params)
    assert r.status_code < 500, r.text


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["If-Match", "If-None-Exist", "Prefer", "Accept", "Content-Type", "Content-Length-X"]
        ),
        # h11 refuses to send values with surrounding white space: strip them client-side.
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
            str.strip
        ),
        max_size=4,
    )
)
def test_arbitrary_headers_never_cause_a_500(server: ServerThread, headers: dict[str, str]) -> None:
    body = b'{"resourceType":"Patient","id":"fuzz-1"}'
    with httpx.Client(base_url=server.base, timeout=30) as c:
        for method, url in (
            ("POST", "/Patient"),
            ("PUT", "/Patient/fuzz-1"),
            ("GET", "/Patient/fuzz-1"),
        ):
            r = c.request(method, url, content=body if method != "GET" else None, headers=headers)
            assert r.status_code < 500, (method, headers, r.text)
