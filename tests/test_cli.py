"""The healthmesh command: demo on the embedded database, serve's refusal without --open, load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

HM = [sys.executable, "-m", "healthmesh"]


def _wait_healthy(port: int, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


@pytest.mark.slow
def test_demo_starts_the_embedded_database_loads_the_sample_and_serves(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "hm"
    log = tmp_path / "demo.log"
    # root's usual PATH: as root the embedded PostgreSQL creates its own user (useradd).
    env_free = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
    process = subprocess.Popen(
        [*HM, "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env_free,  # no HEALTHMESH_DATABASE_URL: the embedded default
    )
    try:
        _wait_healthy(port, process)
        base = f"http://127.0.0.1:{port}/fhir"
        patients = httpx.get(f"{base}/Patient", params={"_summary": "count"}).json()
        assert patients["total"] == 5
        first = httpx.get(f"{base}/Patient", params={"_count": 1}).json()["entry"][0]["resource"]
        assert httpx.get(f"{base}/Patient/{first['id']}").json() == first
        output = log.read_text()
        assert "WITHOUT AUTHORIZATION" in output
        assert f"{base}/metadata" in output
        assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "18"
    finally:
        process.terminate()
        process.wait(20)
        subprocess.run(
            [*HM, "stop", "--data-dir", str(data_dir)],
            check=False,
            capture_output=True,
            env=env_free,
        )
    assert not (data_dir / "pg" / "postmaster.pid").exists()


def test_serve_without_open_refuses_to_run_unprotected() -> None:
    result = subprocess.run(
        [*HM, "serve", "--port", str(free_port())], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"--open" in result.stderr


def test_load_reports_a_missing_path(tmp_path: Path, database_url: str) -> None:
    result = subprocess.run(
        [*HM, "load", str(tmp_path / "nope"), "--database-url", database_url],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"no such file" in result.stderr


def test_load_exits_nonzero_and_lists_errors(tmp_path: Path, database_url: str) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType":"Patient","id":"cli-ok"}\n{"resourceType":"Nope"}\n')
    result = subprocess.run(
        [*HM, "load", str(bad), "--quiet", "--database-url", database_url],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"line 2" in result.stderr
    assert b"Patient" in result.stderr
