"""Standalone patient launches by SMART clients nobody here wrote.

1. The PyPI ``fhirclient`` (SMART on FHIR Python client): it reads the CapabilityStatement,
   builds the authorize URL with PKCE S256, exchanges the code and reads Observations; a test
   plays the person's browser through the test IdP's login and the consent page.
2. The npm ``fhirclient`` (SMART client-js) in headless Chromium, driven by Playwright: the
   library runs in a page exactly as an app would ship it — discovery, PKCE, redirect, token
   exchange and FHIR requests all from the browser — while Playwright types the login and
   clicks Approve.
Both end with a resource type the person did not grant failing.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from authcode_support import REDIRECT, Browser, Person, person, public_client

from healthmesh.config import Settings

from conftest import ServerThread
from support import FHIR_JSON

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLIENT_JS = Path(__file__).resolve().parents[1] / "browser" / "node_modules" / "fhirclient"
SCOPE = "openid fhirUser launch/patient patient/Observation.rs patient/Patient.rs"


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(database_url=database_url, open=False, test_identity_provider=True)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def ada(database_url: str, server: ServerThread) -> Person:
    """A person with a test-IdP login, a Patient record, and two Observations, written
    through the open test server on the same database. A new one per test: the test IdP
    takes each TOTP code once, so two logins of one account in one 30 s step would clash."""
    with httpx.Client(base_url=server.base, timeout=30) as fhir:
        who = person(database_url, fhir)
        for code, value in (("29463-7", 71.5), ("8302-2", 168.0)):
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{who.patient_id}"},
                "valueQuantity": {"value": value},
            }
            assert fhir.post("/Observation", json=observation, headers=FHIR_JSON).status_code == 201
        condition = {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{who.patient_id}"},
            "code": {"text": "seasonal allergy"},
        }
        assert fhir.post("/Condition", json=condition, headers=FHIR_JSON).status_code == 201
    return who


def _browser_to_redirect(base: str, authorize_url: str, who: Person) -> str:
    """Play the person's browser from the app's authorize URL to the app's redirect URL."""
    with Browser(base) as browser:
        at_idp = browser.http.get(authorize_url)
        form = browser.consent(browser.login(at_idp, who))
        back = browser.decide(form)
        assert back.status_code in (302, 303), back.text
        location: str = back.headers["location"]
        return location


def test_the_python_fhirclient_completes_a_standalone_patient_launch(
    node: ServerThread, database_url: str, ada: Person, tmp_path: Path
) -> None:
    from fhirclient import client as smart_client
    from fhirclient.models.condition import Condition
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRUnauthorizedException

    app = public_client(database_url, scope=SCOPE)
    settings = {
        "app_id": app.client_id,
        "api_base": node.base,
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
    }
    smart = smart_client.FHIRClient(settings=settings)
    authorize_url = smart.authorize_url
    assert authorize_url.startswith(f"{node.base}/auth/authorize")
    assert "code_challenge_method=S256" in authorize_url
    smart.handle_callback(_browser_to_redirect(node.base, authorize_url, ada))
    assert smart.ready
    assert smart.patient_id == ada.patient_id
    me = Patient.read(ada.patient_id, smart.server)
    assert me.id == ada.patient_id
    found = Observation.where({"patient": ada.patient_id}).perform_resources(smart.server)
    assert {o.code.coding[0].code for o in found} == {"29463-7", "8302-2"}
    with pytest.raises((FHIRUnauthorizedException, Exception)) as denied:
        Condition.where({"patient": ada.patient_id}).perform_resources(smart.server)
    assert "403" in str(denied.value) or isinstance(denied.value, FHIRUnauthorizedException)


# --- SMART client-js in Chromium ---------------------------------------------------------------

LAUNCH = """<!doctype html><title>launching</title>
<script src="/fhir-client.js"></script>
<script>
FHIR.oauth2.authorize({{
  clientId: {client_id!r}, scope: {scope!r}, iss: {iss!r},
  redirectUri: {redirect!r}, pkceMode: "required"
}});
</script>"""

APP = """<!doctype html><title>waiting</title>
<script src="/fhir-client.js"></script>
<script>
FHIR.oauth2.ready().then(async (client) => {
  const observations = await client.request("Observation?patient=" + client.patient.id,
                                            {flat: true});
  let denied = null;
  try { await client.request("Condition?patient=" + client.patient.id); }
  catch (e) { denied = String(e.status || e.statusCode || e.message || e); }
  window.result = {patient: client.patient.id,
                   codes: observations.map(o => o.code.coding[0].code).sort(),
                   denied: denied};
  document.title = "done";
}).catch((e) => { window.result = {error: String(e)}; document.title = "failed"; });
</script>"""


@pytest.fixture(scope="module")
def app_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static web server for the browser app (its pages and the client-js bundle)."""
    if not (CLIENT_JS / "build" / "fhir-client.js").exists():
        pytest.skip("npm fhirclient is not installed (make setup installs it into tests/browser)")
    root = tmp_path_factory.mktemp("app")
    shutil.copy(CLIENT_JS / "build" / "fhir-client.js", root / "fhir-client.js")
    handler = partial(QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_smart_client_js_in_chromium_completes_a_standalone_patient_launch(
    node: ServerThread, database_url: str, ada: Person, app_site: tuple[str, Path]
) -> None:
    from playwright.sync_api import sync_playwright

    origin, root = app_site
    redirect = f"{origin}/app.html"
    app = public_client(database_url, scope=SCOPE, redirect_uris=(redirect,))
    (root / "launch.html").write_text(
        LAUNCH.format(client_id=app.client_id, scope=SCOPE, iss=node.base, redirect=redirect)
    )
    (root / "app.html").write_text(APP)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(f"{origin}/launch.html")
            page.wait_for_url(lambda url: "/idp/" in url, timeout=30_000)
            page.fill("input[name=username]", ada.username)
            page.fill("input[name=password]", ada.password)
            page.fill("input[name=totp]", pyotp.TOTP(ada.totp_secret).now())
            page.locator("form").first.locator(
                "button[type=submit], input[type=submit]"
            ).first.click()
            page.wait_for_url(lambda url: "/auth/" in url and "/idp/" not in url, timeout=30_000)
            assert "Patient/" in page.content() or "Observation" in page.content()
            page.locator("button[value=approve]").click()
            page.wait_for_function("document.title !== 'waiting'", timeout=30_000)
            result = page.evaluate("window.result")
        finally:
            browser.close()
    assert "error" not in result, result
    assert result["patient"] == ada.patient_id
    assert result["codes"] == ["29463-7", "8302-2"]
    assert result["denied"] is not None and "403" in result["denied"]
