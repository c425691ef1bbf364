"""Any server process may serve the next step of a flow: all state is in PostgreSQL.

Two servers on one database stand in for two worker processes behind one base URL; the
browser's steps alternate between them, and the code is exchanged at the other one.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from authcode_support import Browser, Pkce, authorize_params, exchange, person, public_client

from healthmesh.api.app import create_app
from healthmesh.config import Settings

from conftest import free_port


class Worker:
    """The app under uvicorn on a given port, in a thread (like conftest.ServerThread)."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.port = port
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def workers(database_url: str) -> Iterator[tuple[str, int]]:
    first, second = free_port(), free_port()
    base = f"http://127.0.0.1:{first}/fhir"  # what the proxy in front of both would answer as
    settings = Settings(
        database_url=database_url, open=True, test_identity_provider=True, base_url=base
    )
    with Worker(settings, first), Worker(settings, second):
        yield base, second


def on(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


def test_each_step_of_a_flow_may_be_served_by_another_process(
    workers: tuple[str, int], database_url: str
) -> None:
    base, second = workers
    with httpx.Client(base_url=base, timeout=30) as fhir:
        someone = person(database_url, fhir)
    app = public_client(database_url)
    pkce = Pkce()
    with Browser(base) as browser:
        at_idp = browser.authorize(authorize_params(app, base, pkce))  # process 1
        callback = browser.sign_in_at_idp(at_idp, someone)  # the IdP, served by process 1
        to_consent = browser.http.get(on(callback, second))  # process 2
        assert to_consent.status_code == 303, to_consent.text
        form = browser.consent(to_consent)  # process 1 (the base URL's)
        decided = browser.http.post(
            on(form.action, second),  # process 2
            content=urllib.parse.urlencode(
                [("request", form.request), ("csrf", form.csrf), ("decision", "approve")]
                + [("scope", s) for s in form.scopes]
            ),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        code = dict(
            urllib.parse.parse_qsl(urllib.parse.urlsplit(decided.headers["location"]).query)
        )["code"]
    with httpx.Client(timeout=30) as http:
        response = exchange(http, on(base, second), app, code, pkce)  # process 2
    assert response.status_code == 200, response.text
    assert response.json()["patient"] == someone.patient_id
