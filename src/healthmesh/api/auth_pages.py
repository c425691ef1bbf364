"""Server-rendered HTML of the authorization flow: the consent page and error pages.

No scripts and no external resources, so the pages work everywhere and a strict
Content-Security-Policy can forbid everything else. Every value is HTML-escaped; the forms
use labels, a fieldset with a legend and real buttons, so screen readers and keyboards get
the same page as everyone else (WCAG 2.1: 1.3.1, 2.1.1, 2.4.7, 3.3.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

from healthmesh.auth.scope_words import ScopeWords

# Pages of the flow are never cached, never framed (clickjacking of the consent buttons), and
# run nothing but their own inline style. No form-action: browsers apply it to the redirect
# that follows the consent form, which goes to the app's registered redirect_uri.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_STYLE = """
:root { color-scheme: light dark; --accent: #1f5fbf; --line: #c8cdd4; }
* { box-sizing: border-box; }
body { margin: 0; font: 17px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: Canvas; color: CanvasText; }
main { max-width: 34rem; margin: 2rem auto; padding: 1.5rem; border: 1px solid var(--line);
       border-radius: 12px; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
p.lead { margin-top: 0; }
fieldset { border: 0; padding: 0; margin: 1rem 0; }
legend { font-weight: 600; margin-bottom: .5rem; }
.scope { display: flex; gap: .75rem; align-items: flex-start; padding: .6rem .4rem;
         border-top: 1px solid var(--line); }
.scope input { width: 1.25rem; height: 1.25rem; margin-top: .15rem; flex: none; }
.scope code { display: block; font-size: .8rem; opacity: .75; word-break: break-all; }
.actions { display: flex; gap: .75rem; flex-wrap: wrap; margin-top: 1.25rem; }
button { font: inherit; padding: .6rem 1.4rem; border-radius: 8px; cursor: pointer;
         border: 2px solid var(--accent); }
button.approve { background: var(--accent); color: #fff; }
button.deny { background: transparent; color: CanvasText; }
button:focus-visible, input:focus-visible { outline: 3px solid #f0a000; outline-offset: 2px; }
.note { font-size: .9rem; opacity: .85; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def consent_page(
    *,
    app_name: str,
    scopes: Sequence[ScopeWords],
    action: str,
    request_id: str,
    csrf: str,
    who: str,
) -> HTMLResponse:
    """The user decides which of the requested scopes the app gets (granular consent)."""
    items = []
    for n, scope in enumerate(scopes):
        box = f"scope-{n}"
        items.append(
            '<div class="scope">'
            f'<input type="checkbox" id="{box}" name="scope" value="{escape(scope.scope)}" checked>'
            f'<label for="{box}">{escape(scope.text)}<code>{escape(scope.scope)}</code></label>'
            "</div>"
        )
    body = (
        f"<h1>Allow {escape(app_name)} to use your health records?</h1>"
        f'<p class="lead">You are signed in as {escape(who)}. '
        f"<strong>{escape(app_name)}</strong> asks to:</p>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="request" value="{escape(request_id)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        "<fieldset><legend>Untick anything you do not want to share</legend>"
        + "".join(items)
        + "</fieldset>"
        '<div class="actions">'
        '<button class="approve" type="submit" name="decision" value="approve">Allow</button>'
        '<button class="deny" type="submit" name="decision" value="deny">Deny</button>'
        "</div></form>"
        '<p class="note">You can withdraw this permission later. The app only gets what you '
        "leave ticked.</p>"
    )
    return HTMLResponse(_page(f"Allow {app_name}?", body), headers=PAGE_HEADERS)


def message_page(title: str, message: str, *, status: int) -> HTMLResponse:
    """An error or refusal shown to the person, not sent to the app (no redirect)."""
    body = f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
    return HTMLResponse(_page(title, body), status_code=status, headers=PAGE_HEADERS)
