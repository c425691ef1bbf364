"""The FHIR base the server answers with is the one the client addressed (request_base),
exactly as Starlette's ``request.url`` would spell it, for every shape of request."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from healthmesh.api.parsing import request_base


def _request(scheme: str, server: tuple[str, int] | None, host: bytes | None) -> Request:
    headers = [(b"host", host)] if host is not None else []
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "scheme": scheme,
        "server": server,
        "path": "/fhir/Patient",
        "raw_path": b"/fhir/Patient",
        "query_string": b"identifier=x",
        "headers": [*headers, (b"accept", b"application/fhir+json")],
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("scheme", "server", "host"),
    [
        ("http", ("127.0.0.1", 8080), b"127.0.0.1:8080"),
        ("https", ("10.0.0.1", 443), b"fhir.example.org"),
        ("http", ("127.0.0.1", 8080), None),
        ("http", ("127.0.0.1", 80), None),
        ("https", ("node.example", 443), None),
        ("https", ("node.example", 8443), None),
    ],
)
def test_the_base_is_spelled_as_starlette_spells_the_request_url(
    scheme: str, server: tuple[str, int] | None, host: bytes | None
) -> None:
    request = _request(scheme, server, host)
    expected = f"{request.url.scheme}://{request.url.netloc}/fhir"
    assert request_base(_request(scheme, server, host)) == expected
