"""The check-in page in headless Chromium (Debian's, through Playwright): a front desk signs
in with a staff token, uploads a photo of the patient's QR code, sees the summary, imports;
and meets a wrong passcode, an expired link and an unreadable photo.

With ``HEALTHMESH_SCREENSHOTS=docs/img`` the run saves the screenshots docs/sharing.md shows.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from checkin_support import Clinic, Nodes, two_nodes

from healthmesh.share import qr
from healthmesh.share.shl import LinkPayload, decode

from conftest import ServerThread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("HEALTHMESH_SCREENSHOTS")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def nodes(admin_url: str, database_url: str, server: ServerThread) -> Iterator[Nodes]:
    with two_nodes(admin_url, database_url, server) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # A fake camera (Chromium's test pattern) for the getUserMedia capture path.
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, nodes: Nodes) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
    opened = context.new_page()
    clinic = Clinic(nodes.clinic)
    opened.goto(f"{clinic.origin}/checkin")
    opened.fill("#token", clinic.token)
    opened.click("#use-token")
    opened.wait_for_selector("#scan:not([hidden])")
    try:
        yield opened
    finally:
        clinic.http.close()
        context.close()


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"checkin-{name}.png"), full_page=True)


def _message(page: Any) -> str:
    page.wait_for_selector("#message:not([hidden])")
    text: str = page.inner_text("#message")
    return text


def test_upload_a_qr_photo_see_the_summary_and_import(
    page: Any, nodes: Nodes, tmp_path: Path
) -> None:
    sender = nodes.person()
    shlink, _ = sender.link()
    photo = tmp_path / "qr.png"
    photo.write_bytes(qr.link_qr(f"https://viewer.example/#{shlink}", "png"))
    _shot(page, "1-scan")
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("#summary:not([hidden])")
    assert page.inner_text("[data-testid=patient-name]") == f"Ada {sender.person.family}"
    assert page.inner_text("[data-testid=payor]") == "Acme Health Plan"
    assert "Asthma" in page.inner_text("#problems")
    assert "Salbutamol inhaler" in page.inner_text("#medications")
    assert "Allergy to peanut" in page.inner_text("#allergies")
    assert "Influenza vaccine" in page.inner_text("#immunizations")
    assert "My asthma story" in page.inner_text("#documents")
    assert page.get_attribute("#documents a[download]", "href").startswith("blob:")
    assert page.is_checked("[data-testid=new-patient]")  # nobody here yet: a new patient
    _shot(page, "2-summary")
    page.click("#import")
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#result-text").startswith("Imported")
    links = page.eval_on_selector_all("#result-links a", "nodes => nodes.map(n => n.dataset.ref)")
    assert len(links) == len(set(links)) and links[0].startswith("Patient/")
    page.click("#result-links a >> nth=0")
    page.wait_for_selector("#resource:not([hidden])")
    assert '"resourceType": "Patient"' in page.inner_text("#resource")
    _shot(page, "3-imported")
    # The same share again: the page now proposes the patient just created, and adds nothing.
    page.click("#next")
    page.fill("#link", shlink)
    page.click("#open-link")
    page.wait_for_selector("[data-testid=candidate]")
    assert page.is_checked("[data-testid=candidate]")
    page.click("#import")
    page.wait_for_selector("#result:not([hidden])")
    assert "already imported" in page.inner_text("#result-text")


def test_a_wrong_passcode_says_how_many_attempts_are_left(page: Any, nodes: Nodes) -> None:
    sender = nodes.person()
    shlink, _ = sender.link(flag="P", passcode="2468")
    page.fill("#link", shlink)
    page.click("#open-link")
    assert "Passcode needed" in _message(page)
    page.fill("#passcode", "1111")
    page.click("#send-passcode")
    page.wait_for_selector("#message[data-reason=wrong-passcode]")
    text = page.inner_text("#message")
    assert "Wrong passcode" in text and "9 attempt(s) left" in text
    _shot(page, "4-wrong-passcode")
    page.fill("#passcode", "2468")
    page.click("#send-passcode")
    page.wait_for_selector("#summary:not([hidden])")


def test_an_expired_link_and_an_unreadable_photo_are_explained(
    page: Any, nodes: Nodes, tmp_path: Path
) -> None:
    sender = nodes.person()
    payload = decode(sender.link()[0])
    stale = LinkPayload(url=payload.url, key=payload.key, flag="U", exp=int(time.time()) - 5)
    page.fill("#link", stale.encode())
    page.click("#open-link")
    assert "Link expired" in _message(page)
    assert page.is_hidden("#summary")
    _shot(page, "5-expired")
    blank = tmp_path / "blank.png"
    ok, png = cv2.imencode(".png", np.full((240, 320), 200, np.uint8))
    assert ok
    blank.write_bytes(bytes(png))
    page.set_input_files("#photo", str(blank))
    page.wait_for_selector("#message[data-reason=unreadable-photo]")
    assert "Photo could not be read" in page.inner_text("#message")
    _shot(page, "6-unreadable-photo")


def test_a_camera_frame_is_captured_and_sent(page: Any) -> None:
    """getUserMedia → canvas → POST: the fake camera shows a test pattern, not a QR code, so
    the server's answer is the unreadable-photo message — proof the frame made the trip."""
    page.click("#camera-start")
    page.wait_for_selector("#camera-capture:not([hidden])")
    page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
    page.click("#camera-capture")
    page.wait_for_selector("#message[data-reason=unreadable-photo]")
    assert "No QR code could be read" in page.inner_text("#message")
