"""Talking to a sharing server named by a QR code, carefully (SHL IG "Manifest", "U flag").

A link's ``url`` and a manifest's ``location`` URLs come from whoever made the QR code, so
every request is treated as a server-side request forgery risk:

- https only, to hosts that resolve to public addresses only (no loopback, private, link-local,
  multicast or reserved ranges), unless ``allow_insecure`` (tests, a one-machine demo);
- no redirects followed (a 3xx is reported, not chased to another host);
- a time-out per request and a cap on every response's size, read as a stream;
- nothing of the URL, the key or the passcode is ever logged.

Known limit: the address check resolves the host before httpx connects, so a DNS answer that
changes in between (rebinding) is not caught; a deployment that needs that guarantee puts an
egress proxy in front.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson

from healthmesh.checkin import errors
from healthmesh.checkin.settings import CheckinSettings

# httpx logs every request's URL at INFO; URLs taken from QR codes (link urls, file
# locations) are capabilities, so unless the operator configured that logger, keep it quiet.
_HTTPX_LOG = logging.getLogger("httpx")
if _HTTPX_LOG.level == logging.NOTSET:
    _HTTPX_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: httpx.Headers


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


class SafeFetcher:
    def __init__(self, settings: CheckinSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http

    async def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise errors.refused_address("The link does not point at a web address.")
        if parts.username or parts.password:
            raise errors.refused_address("The link's address carries credentials; refused.")
        if self.settings.allow_insecure:
            return
        if parts.scheme != "https":
            raise errors.refused_address("The link's server is not https; it was not contacted.")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            raise errors.unreachable("The link's server could not be found (DNS).") from None
        if not infos or not all(_public(str(info[4][0])) for info in infos):
            raise errors.refused_address(
                "The link points at a private or local address; it was not contacted."
            )

    async def request(self, method: str, url: str, *, json: Any = None) -> Answer:
        await self.check_url(url)
        content = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        limit = self.settings.max_bytes
        try:
            async with self.http.stream(
                method,
                url,
                content=content,
                headers=headers,
                timeout=self.settings.timeout,
                follow_redirects=False,
            ) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise errors.unreachable(
                            f"The sharing server sent more than {limit} bytes; stopped."
                        )
                    chunks.append(chunk)
                return Answer(response.status_code, b"".join(chunks), response.headers)
        except httpx.TimeoutException:
            raise errors.unreachable("The sharing server did not answer in time.") from None
        except httpx.HTTPError:
            raise errors.unreachable("The sharing server could not be reached.") from None

    async def manifest(
        self, url: str, *, recipient: str, passcode: str | None, embedded_max: int
    ) -> dict[str, Any]:
        """``POST url`` → the manifest; the IG's 401/404/429 as check-in problems."""
        body: dict[str, Any] = {"recipient": recipient, "embeddedLengthMax": embedded_max}
        if passcode is not None:
            body["passcode"] = passcode
        answer = await self.request("POST", url, json=body)
        _raise_for_link(answer, passcode)
        parsed = _json(answer.body)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("files"), list):
            raise errors.unreachable("The sharing server's manifest is not {files: [...]}.")
        return parsed

    async def direct(self, url: str, *, recipient: str) -> str:
        """U flag: ``GET url?recipient=…`` → the single encrypted file."""
        sep = "&" if "?" in url else "?"
        answer = await self.request("GET", f"{url}{sep}{urlencode({'recipient': recipient})}")
        _raise_for_link(answer, None)
        return answer.body.decode("ascii", errors="replace")

    async def location(self, url: str) -> str:
        """A manifest file's ``location``: the JWE, or a problem for this one file."""
        answer = await self.request("GET", url)
        if answer.status != 200:
            raise errors.unreachable(f"A file could not be downloaded (HTTP {answer.status}).")
        return answer.body.decode("ascii", errors="replace")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _raise_for_link(answer: Answer, passcode: str | None) -> None:
    status = answer.status
    if status == 200:
        return
    if status == 401:
        parsed = _json(answer.body)
        remaining = parsed.get("remainingAttempts") if isinstance(parsed, dict) else None
        if passcode is None:
            raise errors.passcode_required()
        raise errors.wrong_passcode(remaining if isinstance(remaining, int) else 0)
    if status == 404:
        raise errors.link_inactive()
    if status == 429:
        retry = answer.headers.get("retry-after", "60")
        raise errors.throttled(int(retry) if retry.isdigit() else 60)
    if 300 <= status < 400:
        raise errors.unreachable("The sharing server redirected elsewhere; not followed.")
    raise errors.unreachable(f"The sharing server answered HTTP {status}.")
