"""A Bulk Data client for ``healthmesh export``: kick off, poll, download the NDJSON files.

Speaks the IG's asynchronous pattern to any FHIR server (this node or another): honours
``Retry-After``, shows ``X-Progress`` in a progress line, and writes each output file as
``<Type>.<n>.ndjson`` (error files as ``OperationOutcome.<n>.ndjson``) into a folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MAX_WAIT = 120.0  # seconds: the longest Retry-After honoured


class ExportFailed(Exception):
    """The server refused the kick-off or the job failed; the message says what it said."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    type: str
    count: int


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        issues = body.get("issue") or []
        text = "; ".join(str(i.get("diagnostics", i.get("code", ""))) for i in issues)
    except ValueError:
        text = response.text[:200]
    return f"HTTP {response.status_code}: {text}"


def run_export(
    client: httpx.Client,
    *,
    path: str = "/$export",
    params: list[tuple[str, str]] | None = None,
    out: Path,
    progress: Callable[[str], None] = lambda _: None,
    poll: float = 1.0,
) -> tuple[dict[str, Any], list[Downloaded]]:
    """Run one export with ``client`` (base URL and Authorization set); (manifest, files)."""
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    response = client.get(path, params=tuple(params or ()), headers=headers)
    if response.status_code != 202:
        raise ExportFailed(_problem(response))
    status_url = response.headers["Content-Location"]
    while True:
        response = client.get(status_url)
        if response.status_code == 200:
            break
        if response.status_code != 202:
            raise ExportFailed(_problem(response))
        progress(response.headers.get("X-Progress", "in progress"))
        retry = response.headers.get("Retry-After", "")
        time.sleep(min(float(retry), MAX_WAIT) if retry.isdigit() else poll)
    manifest: dict[str, Any] = response.json()
    out.mkdir(parents=True, exist_ok=True)
    files: list[Downloaded] = []
    for kind in ("output", "error"):
        for i, entry in enumerate(manifest.get(kind) or (), start=1):
            target = out / f"{entry['type']}.{i}.ndjson"
            progress(f"downloading {target.name}")
            with client.stream(
                "GET", entry["url"], headers={"Accept": "application/fhir+ndjson"}
            ) as r:
                if r.status_code != 200:
                    r.read()
                    raise ExportFailed(f"{entry['url']}: {_problem(r)}")
                with target.open("wb") as sink:
                    for block in r.iter_bytes():
                        sink.write(block)
            files.append(Downloaded(target, entry["type"], int(entry.get("count", 0))))
    return manifest, files
