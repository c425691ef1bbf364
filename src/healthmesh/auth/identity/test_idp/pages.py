"""The test IdP's HTML: every page carries the TEST label, every value is escaped."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

LABEL = "TEST IDENTITY SERVICE — synthetic people only"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
    ".banner{background:#b00020;color:#fff;font-weight:700;padding:.75rem;text-align:center;"
    "letter-spacing:.03em}"
    "label{display:block;margin:.75rem 0 .25rem}input{width:100%;padding:.5rem;font-size:1rem}"
    "button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}"
    ".error{color:#b00020;font-weight:600}.note{color:#555;font-size:.9rem}"
)


def page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · {escape(LABEL)}</title><style>{_STYLE}</style></head><body>"
        f'<div class="banner" role="alert">{escape(LABEL)}</div>'
        f"<h1>{escape(title)}</h1>{body}"
        f'<p class="note">{escape(LABEL)}. Never enter real personal data here.</p>'
        "</body></html>"
    )


def login_page(params: Mapping[str, str], client_name: str, error: str | None = None) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in sorted(params.items())
    )
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return page(
        "Sign in",
        f"<p>{escape(client_name)} asks to confirm who you are (IAL2, password + one-time"
        " code).</p>"
        f"{message}"
        '<form method="post" action="login" autocomplete="off">'
        f"{hidden}"
        '<label for="username">Username</label>'
        '<input id="username" name="username" required autocapitalize="none">'
        '<label for="password">Password</label>'
        '<input id="password" name="password" type="password" required>'
        '<label for="totp">One-time code (authenticator app)</label>'
        '<input id="totp" name="totp" inputmode="numeric" pattern="[0-9]{6}" required>'
        "<button type=submit>Sign in</button></form>",
    )


def error_page(message: str) -> str:
    return page("Cannot continue", f'<p class="error">{escape(message)}</p>')
