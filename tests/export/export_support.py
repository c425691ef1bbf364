"""Helpers for the bulk export tests: a node on a database of its own, and a client's side of
the asynchronous request pattern (kick-off, poll, download)."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

import httpx
import orjson

from conftest import scratch_database

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def own_database(admin_url: str, prefix: str) -> AbstractContextManager[str]:
    """A database for one module: a system export reads everything, so no other test's rows
    (or TRUNCATE) may be in it."""
    return scratch_database(admin_url, prefix)


def kickoff(
    client: httpx.Client,
    path: str = "/$export",
    params: Any = None,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> str:
    """Start an export; the status URL (asserting the 202 and its Content-Location)."""
    sent = {**ASYNC, **(headers or {})}
    if body is not None:
        sent["Content-Type"] = "application/fhir+json"
        response = client.post(path, params=params, json=body, headers=sent)
    else:
        response = client.get(path, params=params, headers=sent)
    assert response.status_code == 202, response.text
    location = response.headers["Content-Location"]
    assert "/$export-status/" in location
    return location


def wait(client: httpx.Client, status_url: str, timeout: float = 60) -> httpx.Response:
    """Poll until the job is no longer running; the final answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url)
        if response.status_code != 202:
            return response
        assert response.headers["Retry-After"].isdigit()
        assert response.headers["X-Progress"]
        if time.monotonic() > deadline:
            raise AssertionError(f"export still running after {timeout} s")
        time.sleep(0.1)


def manifest(client: httpx.Client, status_url: str) -> dict[str, Any]:
    response = wait(client, status_url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def download(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    response = client.get(url, headers={"Accept": "application/fhir+ndjson"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in response.content.splitlines() if line]


def export_all(client: httpx.Client, status_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every output file of a finished export, by type (checking each file's count)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest(client, status_url)["output"]:
        resources = download(client, entry["url"])
        assert len(resources) == entry["count"]
        assert {r["resourceType"] for r in resources} <= {entry["type"]}
        found.setdefault(entry["type"], []).extend(resources)
    return found


def ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


def search_ids(client: httpx.Client, res_type: str, **params: str) -> set[str]:
    """Every id a search returns, all pages."""
    found: set[str] = set()
    url: str | None = f"/{res_type}"
    query: dict[str, str] | None = {"_count": "500", **params}
    while url is not None:
        response = client.get(url, params=query)
        assert response.status_code == 200, response.text
        bundle = response.json()
        found |= {e["resource"]["id"] for e in bundle.get("entry", [])}
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        query = None
    return found
