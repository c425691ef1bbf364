"""The per-request shortcuts of the API say what the general machinery says: paging links'
query strings, the passed headers, and which route answers a path."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route

from healthmesh.api.app import _type_route_first, _TypeRoute, create_app
from healthmesh.api.parsing import passed_headers
from healthmesh.config import Settings
from healthmesh.interactions.bundles import query_string

ALPHABET = "aZ09_.-~ !*'();:@&=+$,/?#[]%|\\\"<>{}^`ñé€😀\t\n\x7f"


def test_query_strings_are_what_urlencode_makes() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        params = [
            (
                "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6))),
                "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))),
            )
            for _ in range(rng.randint(0, 4))
        ]
        assert query_string(params) == urlencode(params), params


def test_passed_headers_are_what_starlette_reads() -> None:
    raw = [
        (b"accept", b"application/fhir+json"),
        (b"prefer", b"return=minimal"),
        (b"if-match", b'W/"1"'),
        (b"prefer", b"handling=strict"),  # repeated: the first counts, as in request.headers
        (b"x-other", b"ignored"),
    ]
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": raw})
    wanted = ("if-match", "if-none-exist", "if-none-match", "if-modified-since", "prefer")
    expected = {name: request.headers[name] for name in wanted if name in request.headers}
    assert passed_headers(request) == expected == {"prefer": "return=minimal", "if-match": 'W/"1"'}


def _answering(routes: list[BaseRoute], path: str, method: str) -> tuple[str, str] | None:
    """The route Starlette's Router hands the request to (first full match, else the first
    partial one), as (path, endpoint name)."""
    scope: dict[str, Any] = {"type": "http", "path": path, "method": method, "root_path": ""}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path, route.endpoint.__name__  # type: ignore[attr-defined]
        if match is Match.PARTIAL and partial is None:
            partial = route
    return (partial.path, partial.endpoint.__name__) if partial else None  # type: ignore[attr-defined]


PATHS = [
    "/fhir/Patient",
    "/fhir/Patient/1",
    "/fhir/Patient/1/_history/2",
    "/fhir/Patient/1/Observation",
    "/fhir/Patient/$export",
    "/fhir/Patient/1/$everything",
    "/fhir/Group/g/$export",
    "/fhir/$export",
    "/fhir/$export-status/j",
    "/fhir/auth/token",
    "/fhir/.well-known/smart-configuration",
    "/fhir/metadata",
    "/fhir/_history",
    "/fhir",
    "/fhir/Éclair",
    "/health",
    "/share/links",
    "/checkin",
]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS"])
def test_every_path_is_answered_by_the_route_that_answered_it_before(
    database_url: str, method: str
) -> None:
    app = create_app(Settings(database_url=database_url, open=True))
    routes = app.router.routes
    assert isinstance(routes[0], _TypeRoute)
    general = routes[1:]  # the table without the shortcut
    for path in PATHS:
        assert _answering(routes, path, method) == _answering(general, path, method), path


def test_no_shortcut_when_a_route_ahead_could_take_a_type_path() -> None:
    async def endpoint(request: Request) -> None:
        return None

    fhir = Route("/fhir/{path:path}", endpoint)
    routes: list[BaseRoute] = [Route("/fhir/Patient/special", endpoint), fhir]
    _type_route_first(routes, fhir)
    assert not any(isinstance(route, _TypeRoute) for route in routes)
    routes = [Route("/fhir/auth/x", endpoint), fhir]
    _type_route_first(routes, fhir)
    assert isinstance(routes[0], _TypeRoute)
