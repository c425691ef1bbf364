"""The patient's sharing page: ``GET /share`` (HTML), ``/share/page.js``, ``/share/page.css``.

A server-rendered page with a little vanilla JavaScript (no build step) over the management
API of api/share_routes.py: choose what to share, create a link, show its QR code full-screen,
see who opened it, pause, resume, revoke (docs/sharing.md "For the patient").

How the page gets the patient's token, and why this way: it is a SMART app of its own, a
*public* client (``ShareSettings.page_client``, default the demo's ``healthmesh-demo``) using
the authorization code flow with PKCE S256 (SMART App Launch 2.2 §"standalone launch"), so
the person signs in at the node's identity provider and approves on the consent page; the
page never sees a password. The token lives only in the page's memory (not in cookies, so
no request can be forged cross-site; not in localStorage, where it would outlive the tab),
and the PKCE verifier and state sit in sessionStorage for the one redirect. Pasting tokens is
deliberately not offered: it teaches people to hand credentials to whoever asks.

The page runs nothing inline: its Content-Security-Policy allows scripts and styles from this
origin only, images from ``blob:`` (the QR codes) and requests to this origin only; it is
never framed and sends no Referer (the code in its URL must not travel).
"""

from __future__ import annotations

from html import escape
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthmesh.config import Settings

SCOPE = "openid fhirUser launch/patient patient/*.rs"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Share my health record</title>
<link rel="stylesheet" href="/share/page.css">
<script src="/share/page.js" defer></script>
</head>
<body data-client="{client}" data-fhir="{fhir}" data-scope="{scope}">
<header><h1>Share my health record</h1>
<p class="lead">Make a QR code a clinic can scan at check-in. You choose what it holds, how
long it works and whether it needs a passcode, and you see every time someone opens it.</p>
</header>
<main>
<div id="message" role="alert" hidden></div>

<section id="signin" hidden>
  <h2>Sign in</h2>
  <p>Sign in with your health account to make and manage your shares.</p>
  <button id="signin-button" type="button" class="primary">Sign in</button>
</section>

<section id="create" hidden>
  <h2>New share</h2>
  <form id="create-form">
    <fieldset id="what"><legend>What to share</legend>
      <div id="sections"></div>
      <label class="choice"><input type="checkbox" name="insurance" checked> Insurance card</label>
      <label class="choice"><input type="checkbox" name="rendering" checked> A printable PDF
        of what I share</label>
      <label class="file">Add my own PDF documents (optional)
        <input type="file" name="documents" accept="application/pdf" multiple></label>
    </fieldset>
    <fieldset><legend>How it works</legend>
      <label class="choice"><input type="radio" name="kind" value="once" checked>
        One-time: works for the first clinic that opens it, then stops</label>
      <label class="choice"><input type="radio" name="kind" value="long">
        Long-term: the clinic can open it again until it expires</label>
      <label>Works for
        <select name="expiry">
          <option value="3600">1 hour</option>
          <option value="86400" selected>1 day</option>
          <option value="604800">1 week</option>
          <option value="2592000">30 days</option>
          <option value="31536000">1 year</option>
        </select></label>
      <label>Passcode (optional; tell it to the clinic yourself)
        <input type="text" name="passcode" maxlength="64" autocomplete="off"
               inputmode="numeric"></label>
      <label>Name of this share
        <input type="text" name="label" maxlength="80" value="Check-in"></label>
    </fieldset>
    <button type="submit" class="primary">Create share</button>
  </form>
</section>

<section id="shares" hidden>
  <h2>My shares</h2>
  <p id="no-shares">You have no shares yet.</p>
  <ul id="share-list"></ul>
</section>
</main>

<div id="qr-screen" hidden>
  <div class="qr-box">
    <p id="qr-label" class="qr-label"></p>
    <img id="qr-image" alt="QR code of this share">
    <p id="qr-expiry" class="qr-expiry"></p>
    <p id="qr-passcode" class="qr-passcode" hidden>The clinic will ask for your passcode.</p>
    <button id="qr-close" type="button">Close</button>
  </div>
</div>
</body>
</html>
"""


def share_page_html(client_id: str, fhir_base: str) -> str:
    return _HTML.format(client=escape(client_id), fhir=escape(fhir_base), scope=escape(SCOPE))


def mount_share_page(app: Starlette, settings: Settings) -> None:
    """Add the page and its two assets (read once, at start)."""

    def fhir_base(request: Request) -> str:
        if settings.base_url:
            return settings.base_url
        return f"{request.url.scheme}://{request.url.netloc}/fhir"

    async def page(request: Request) -> Response:
        html = share_page_html(settings.share.page_client, fhir_base(request))
        return Response(html, 200, PAGE_HEADERS, media_type="text/html")

    def asset(name: str, media: str) -> Route:
        text = resources.files("healthmesh.api").joinpath("static", f"share-{name}").read_text()
        headers = {**PAGE_HEADERS, "Cache-Control": "no-cache"}

        async def serve(request: Request) -> Response:
            return Response(text, 200, headers, media_type=media)

        return Route(f"/share/{name}", serve, methods=["GET"])

    app.router.routes.extend(
        [Route("/share", page, methods=["GET"]), *(asset(n, m) for n, m in _ASSETS.items())]
    )
