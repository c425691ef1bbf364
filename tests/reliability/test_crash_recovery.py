"""kill -9 of the server during a load: every transaction answered 200 is fully present, none partially."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import free_port
from support import FHIR_JSON

BUNDLE_SIZE = 40


def _bundle(n: int) -> dict[str, object]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:crash", "value": f"b{n}-{i}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
            for i in range(BUNDLE_SIZE)
        ],
    }


def _start(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "healthmesh",
        "serve",
        "--open",
        "--port",
        str(port),
        "--database-url",
        url,
    ]
    process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_kill_9_during_load_leaves_only_whole_transactions(
    database_url: str, empty_store: None, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    server = _start(database_url, port, log)
    answered: set[int] = set()
    counter = iter(range(10**6))
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir", timeout=30) as c:
            while not stop.is_set():
                with lock:
                    n = next(counter)
                try:
                    r = c.post("", json=_bundle(n), headers=FHIR_JSON)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        answered.add(n)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(answered) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)  # mid-load: some transactions are in flight
    server.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(answered) >= 15, log.read_text()[-2000:]

    restarted = _start(database_url, port, log)
    try:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT split_part(code, '-', 1), count(*) FROM search_token"
                " WHERE system = 'urn:crash' GROUP BY 1"
            ).fetchall()
        stored = {int(prefix[1:]): count for prefix, count in rows}
        assert all(count == BUNDLE_SIZE for count in stored.values()), stored  # none partial
        assert answered <= set(stored)  # every 200 is there
        # And the restarted server serves them.
        first = min(answered)
        found = httpx.get(
            f"http://127.0.0.1:{port}/fhir/Patient", params={"identifier": f"urn:crash|b{first}-0"}
        ).json()
        assert found["total"] == 1
    finally:
        restarted.terminate()
        restarted.wait(10)
