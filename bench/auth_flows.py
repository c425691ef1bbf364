"""Token issuance over real HTTP: cms_smart client_credentials, and the authorization-code
flow played by a browserless client (authorize -> test-IdP login -> callback -> consent ->
code -> token), step by step.

Every request body that needs signing (assertions, id_tokens) is made before the clock
starts; what is timed is the node's work: verifying signatures and id_tokens, matching the
patient, one-time jti bookkeeping, rate-limit counters, grants, signing the access token.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import httpx
import pyotp

from healthmesh.auth.clients import Client
from healthmesh.auth.pkce import s256

STEPS = ("authorize", "idp page", "idp login", "callback", "consent page", "consent", "token")


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95 (ms) of latencies in seconds; needs two samples or more."""
    if len(samples) < 2:
        only = samples[0] * 1000 if samples else 0.0
        return {"p50_ms": only, "p95_ms": only, "n": len(samples)}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000, "n": len(samples)}


@dataclass(slots=True)
class Burst:
    """Requests run by ``concurrency`` threads; wall time from the first to the last answer."""

    seconds: float = 0.0
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # status and error code, no bodies
    latencies: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def add(self, step: str, seconds: float) -> None:
        self.latencies.setdefault(step, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "failures": self.failures[:10],
            "seconds": self.seconds,
            "rate": self.rate,
            "steps": {k: percentiles(v) for k, v in self.latencies.items()},
        }


def run_burst(jobs: list[Callable[[Burst], None]], concurrency: int) -> Burst:
    burst = Burst()
    lock = threading.Lock()

    def one(job: Callable[[Burst], None]) -> None:
        local = Burst()
        try:
            job(local)
            local.ok = 1
        except FlowError as error:
            local.failed = 1
            local.failures.append(str(error))
        with lock:
            burst.ok += local.ok
            burst.failed += local.failed
            burst.failures += local.failures
            for step, values in local.latencies.items():
                burst.latencies.setdefault(step, []).extend(values)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))
    burst.seconds = time.perf_counter() - started
    return burst


class FlowError(RuntimeError):
    """A step answered something other than what the flow expects (status, OAuth error)."""


def _oauth_failure(step: str, response: httpx.Response) -> FlowError:
    error = ""
    if response.headers.get("content-type", "").startswith("application/json"):
        error = str(response.json().get("error", ""))
    return FlowError(f"{step}: HTTP {response.status_code} {error}".strip())


def _timed(burst: Burst, step: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    started = time.perf_counter()
    response = call()
    burst.add(step, time.perf_counter() - started)
    return response


# --- cms_smart -----------------------------------------------------------------------------


def token_job(
    http_of: Callable[[], httpx.Client], token_url: str, form: dict[str, str]
) -> Callable[[Burst], None]:
    def job(burst: Burst) -> None:
        response = _timed(burst, "token", lambda: http_of().post(token_url, data=form))
        if response.status_code != 200 or "access_token" not in response.json():
            raise _oauth_failure("token", response)

    return job


def per_thread_client() -> Callable[[], httpx.Client]:
    """One keep-alive httpx client per worker thread (as many apps calling in parallel)."""
    local = threading.local()

    def get() -> httpx.Client:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=60)
        http: httpx.Client = local.http
        return http

    return get


# --- the authorization-code flow -----------------------------------------------------------


class _Form(HTMLParser):
    """The first form of a page: its action, hidden fields and checkboxes."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str, str]] = []  # (type, name, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        if tag == "input" and "name" in a:
            self.fields.append((a.get("type", "text"), a["name"], a.get("value", "")))


def _form(page: str) -> _Form:
    parser = _Form()
    parser.feed(page)
    return parser


def _redirect(step: str, response: httpx.Response) -> str:
    if response.status_code not in (302, 303):
        raise _oauth_failure(step, response)
    return response.headers["location"]


def browser_to_code(
    base: str, client: Client, person: dict[str, str], burst: Burst
) -> tuple[str, str]:
    """A person's browser from the app's authorize link to the code on the app's redirect;
    each step timed into ``burst``. Returns (code, PKCE verifier)."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0],
        "scope": "openid fhirUser launch/patient patient/*.rs",
        "state": state,
        "aud": base,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    with httpx.Client(timeout=60, follow_redirects=False) as http:
        to_idp = _redirect(
            "authorize",
            _timed(burst, "authorize", lambda: http.get(f"{base}/auth/authorize", params=params)),
        )
        login_page = _timed(burst, "idp page", lambda: http.get(to_idp))
        if login_page.status_code != 200:
            raise _oauth_failure("idp page", login_page)
        form = _form(login_page.text)
        data = {name: value for kind, name, value in form.fields if kind == "hidden"}
        data.update(
            username=person["username"],
            password=person["password"],
            totp=pyotp.TOTP(person["totp_secret"]).now(),
        )
        action = urllib.parse.urljoin(str(login_page.url), form.action or "")
        to_callback = _redirect(
            "idp login", _timed(burst, "idp login", lambda: http.post(action, data=data))
        )
        to_consent = _redirect("callback", _timed(burst, "callback", lambda: http.get(to_callback)))
        page = _timed(burst, "consent page", lambda: http.get(to_consent))
        if page.status_code != 200:
            raise _oauth_failure("consent page", page)
        consent = _form(page.text)
        values = {name: value for kind, name, value in consent.fields if kind == "hidden"}
        decision: list[tuple[str, str]] = [("request", values["request"]), ("csrf", values["csrf"])]
        decision += [("scope", v) for kind, _, v in consent.fields if kind == "checkbox"]
        decision.append(("decision", "approve"))
        back = _redirect(
            "consent",
            _timed(
                burst,
                "consent",
                lambda: http.post(
                    urllib.parse.urljoin(str(page.url), consent.action or ""),
                    content=urllib.parse.urlencode(decision),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ),
            ),
        )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
    if query.get("state") != state or "code" not in query:
        raise FlowError(f"consent: redirect without code ({query.get('error', '?')})")
    return query["code"], verifier


def exchange(
    http: httpx.Client, base: str, client: Client, code: str, verifier: str, burst: Burst
) -> None:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uris[0],
        "client_id": client.client_id,
        "code_verifier": verifier,
    }
    response = _timed(burst, "token", lambda: http.post(f"{base}/auth/token", data=form))
    if response.status_code != 200 or "access_token" not in response.json():
        raise _oauth_failure("token", response)


def full_flow_job(base: str, client: Client, person: dict[str, str]) -> Callable[[Burst], None]:
    def job(burst: Burst) -> None:
        started = time.perf_counter()
        code, verifier = browser_to_code(base, client, person, burst)
        with httpx.Client(timeout=60) as http:
            exchange(http, base, client, code, verifier, burst)
        burst.add("whole flow", time.perf_counter() - started)

    return job
