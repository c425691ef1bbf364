"""`healthmesh idp accounts`: a login for each Patient, printed; never in production."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from support import FHIR_JSON, patient, unique

HM = [sys.executable, "-m", "healthmesh"]


def test_idp_accounts_provisions_a_login_per_patient_and_prints_them(
    client: httpx.Client, database_url: str
) -> None:
    family = unique("Cli").replace("-", "")
    body = patient(name=[{"family": family, "given": ["Zora"]}])
    created = client.post("/Patient", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    patient_id = created.json()["id"]
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("HEALTHMESH_ENV", None)
    run = [*HM, "idp", "accounts", "--database-url", database_url, "--patient", patient_id]
    first = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert "TEST IDENTITY SERVICE" in first.stdout
    row = next(line for line in first.stdout.splitlines() if patient_id in line)
    assert "zora.cli" in row and "Zora" in row
    password = next(word for word in row.split() if word.startswith("demo-"))
    again = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert password in again.stdout  # deterministic: the same login every time


def test_idp_accounts_refuses_in_production(database_url: str) -> None:
    env = {**os.environ, "HEALTHMESH_ENV": "production"}
    result = subprocess.run(
        [*HM, "idp", "accounts", "--database-url", database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2 and "production" in result.stderr
