"""The patient's sharing page in headless Chromium (Debian chromium, driven by Playwright).

A person signs in through the real code flow (the node's TEST identity provider: password +
TOTP, then the consent page), creates a share on the page, and the QR code is read back from
a *screenshot* with OpenCV, resolved over HTTP like a clinic would, and decrypted by hand. The
access then appears in the page's "who opened it" list; revoking on the page makes the link
answer 404.

``HEALTHMESH_SCREENSHOTS=docs/img`` also saves the page's screenshots there (docs/sharing.md
"For the patient" shows them).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest
from share_support import SHARE_SETTINGS, decode_qr_png, independent_decrypt, origin, with_auth

from healthmesh.auth.clients import Client
from healthmesh.auth.identity.test_idp.cli_support import provision_accounts_sync
from healthmesh.config import Settings
from healthmesh.share.shl import decode

from conftest import ServerThread
from support import FHIR_JSON

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_CLIENT = f"share-page-{uuid.uuid4().hex[:8]}"
SHOTS = os.environ.get("HEALTHMESH_SCREENSHOTS")
RECIPIENT = "Front desk, Example Clinic"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(
        database_url=database_url,
        open=False,
        test_identity_provider=True,
        share=replace(SHARE_SETTINGS, page_client=PAGE_CLIENT),
    )
    running = ServerThread(settings)

    async def add(auth: Any) -> None:
        await auth.clients.add(
            Client(
                client_id=PAGE_CLIENT,
                name="HealthMesh sharing page",
                redirect_uris=(f"http://127.0.0.1:{running.port}/share",),
                scope="openid fhirUser launch/patient patient/*.rs",
            )
        )

    with_auth(database_url, add)
    with running:
        yield running


def _person(server: ServerThread, database_url: str) -> Any:
    """A synthetic person with a record worth sharing and a test-IdP login."""
    pid = f"page-{uuid.uuid4().hex[:10]}"
    me = {"reference": f"Patient/{pid}"}
    with httpx.Client(base_url=server.base, timeout=30) as fhir:
        patient = {
            "resourceType": "Patient",
            "id": pid,
            "name": [{"use": "official", "family": "Rivera", "given": ["Alex"]}],
            "gender": "female",
            "birthDate": "1984-05-17",
            # the test IdP's id_token carries the address; matching needs name+DOB+street
            "address": [
                {
                    "line": [f"{uuid.uuid4().int % 900 + 100} Harbor Street"],
                    "city": "Boston",
                    "state": "MA",
                    "postalCode": "02115",
                }
            ],
        }
        assert fhir.put(f"/Patient/{pid}", json=patient, headers=FHIR_JSON).status_code == 201
        condition = {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "subject": me,
            "code": {"text": "Asthma"},
        }
        assert fhir.post("/Condition", json=condition, headers=FHIR_JSON).status_code == 201
        allergy = {"resourceType": "AllergyIntolerance", "patient": me, "code": {"text": "Peanuts"}}
        assert fhir.post("/AllergyIntolerance", json=allergy, headers=FHIR_JSON).status_code == 201
    (account,) = provision_accounts_sync(database_url, patient_ids=[pid])
    return account


def _shot(page: Any, name: str, **options: Any) -> bytes:
    png: bytes = page.screenshot(**options)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SHOTS) / f"share-{name}.png").write_bytes(png)
    return png


def test_a_patient_signs_in_shares_by_qr_sees_who_opened_it_and_revokes(
    node: ServerThread, server: ServerThread, database_url: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    account = _person(server, database_url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())  # "Revoke for good?"
            page.goto(f"{origin(node)}/share")
            page.click("#signin-button")
            page.wait_for_url(lambda url: "/idp/" in url, timeout=30_000)
            page.fill("input[name=username]", account.username)
            page.fill("input[name=password]", account.password)
            page.fill("input[name=totp]", pyotp.TOTP(account.totp_secret).now())
            page.locator("form").first.locator(
                "button[type=submit], input[type=submit]"
            ).first.click()
            page.wait_for_url(lambda url: "/auth/" in url and "/idp/" not in url, timeout=30_000)
            page.locator("button[value=approve]").click()
            page.wait_for_url(f"{origin(node)}/share", timeout=30_000)
            expect(page.locator("#create")).to_be_visible(timeout=30_000)
            expect(page.locator("#sections input")).to_have_count(11)
            page.fill("input[name=label]", "Check-in at Example Clinic")
            # Long-term, so that the 404 at the end is the revocation's (a one-time link
            # would already be used up by the receiver below).
            page.check("input[name=kind][value=long]")
            _shot(page, "create", full_page=True)
            page.click("#create-form button[type=submit]")
            screen = page.locator("#qr-screen")
            expect(screen).to_be_visible(timeout=30_000)
            expect(page.locator("#qr-label")).to_have_text("Check-in at Example Clinic")
            expect(page.locator("#qr-expiry")).to_contain_text("Works until")
            page.wait_for_function("document.getElementById('qr-image').naturalWidth > 0")
            scanned = decode_qr_png(_shot(page, "qr"))
            assert scanned, "OpenCV found no QR code in the screenshot"

            link = decode(scanned)
            assert link.label == "Check-in at Example Clinic" and link.flag == "L"
            manifest = httpx.post(link.url, json={"recipient": RECIPIENT}, timeout=30)
            assert manifest.status_code == 200, manifest.text
            got = httpx.get(manifest.json()["files"][0]["location"], timeout=30)
            assert got.status_code == 200, got.text
            bundle = orjson.loads(independent_decrypt(got.text, link.key)[0])
            texts = str(bundle)
            assert "Asthma" in texts and "Peanuts" in texts and "Rivera" in texts

            page.click("#qr-close")
            item = page.locator("#share-list li").first
            item.get_by_role("button", name="Who opened it").click()
            accesses = item.locator("table.accesses")
            expect(accesses).to_contain_text(RECIPIENT, timeout=30_000)
            expect(accesses).to_contain_text("Opened")
            expect(accesses).to_contain_text("downloaded the file")
            _shot(page, "accesses", full_page=True)

            item.get_by_role("button", name="Revoke").click()
            expect(page.locator("#share-list li").first.locator(".status")).to_have_text(
                "Revoked", timeout=30_000
            )
            expect(page.locator("#message")).to_contain_text("Revoked")
            _shot(page, "revoked", full_page=True)
        finally:
            browser.close()
    assert httpx.post(link.url, json={"recipient": RECIPIENT}, timeout=30).status_code == 404
