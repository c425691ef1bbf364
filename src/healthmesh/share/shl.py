"""The SMART Health Link payload: ``shlink:/`` + base64url(minified JSON) (SHL IG "Link").

``{url, key, exp?, flag?, label?, v?}``: ``url`` ≤ 128 characters with ≥ 256 bits of entropy,
``key`` 43 characters of base64url (32 random bytes), ``exp`` epoch seconds, ``flag`` sorted
letters from L, P, U (never U with P), ``label`` ≤ 80 characters. Receivers ignore unknown
fields. A link may stand behind a viewer URL: ``https://viewer.example/#shlink:/…``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from healthmesh.share.jwe import b64url, b64url_decode

PREFIX = "shlink:/"
MAX_URL = 128
MAX_LABEL = 80
FLAGS = frozenset("LPU")


class InvalidLink(ValueError):
    """A payload that breaks the IG's rules; the message says which."""


def normalise_flag(flag: str) -> str:
    """Sorted, without duplicates; InvalidLink for unknown letters or U with P."""
    letters = set(flag)
    if not letters <= FLAGS or len(letters) != len(flag):
        raise InvalidLink(f"flag {flag!r}: letters L, P, U, each at most once")
    if {"U", "P"} <= letters:
        raise InvalidLink("flag U (direct file) and P (passcode) never go together")
    return "".join(sorted(letters))


def check_label(label: str | None) -> str | None:
    if label is not None and len(label) > MAX_LABEL:
        raise InvalidLink(f"label is {len(label)} characters; at most {MAX_LABEL}")
    return label


def new_key() -> str:
    """32 random bytes: the link's AES-256-GCM key, 43 characters of base64url."""
    return b64url(secrets.token_bytes(32))


def new_id() -> str:
    """The url's last segment: 32 random bytes (256 bits of entropy), 43 characters."""
    return b64url(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkPayload:
    url: str
    key: str
    exp: int | None = None
    flag: str = ""
    label: str | None = None
    v: int | None = None

    def __post_init__(self) -> None:
        if len(self.url) > MAX_URL:
            raise InvalidLink(f"url is {len(self.url)} characters; at most {MAX_URL}")
        if len(self.key) != 43:
            raise InvalidLink("key must be 43 characters of base64url")
        if len(b64url_decode(self.key)) != 32:
            raise InvalidLink("key must be 32 bytes")
        object.__setattr__(self, "flag", normalise_flag(self.flag))
        check_label(self.label)

    def as_json(self) -> dict[str, Any]:
        # The IG example's key order (url, flag, key, label), so that it encodes byte for byte.
        body: dict[str, Any] = {"url": self.url}
        if self.flag:
            body["flag"] = self.flag
        body["key"] = self.key
        if self.exp is not None:
            body["exp"] = self.exp
        if self.label is not None:
            body["label"] = self.label
        if self.v is not None:
            body["v"] = self.v
        return body

    def encode(self) -> str:
        """``shlink:/…``, the form a QR code carries."""
        return PREFIX + b64url(orjson.dumps(self.as_json()))

    def viewer_url(self, viewer: str) -> str:
        """The link behind a viewer: ``<viewer>#shlink:/…`` (the viewer reads the fragment,
        which browsers never send to its server)."""
        return f"{viewer.split('#', 1)[0]}#{self.encode()}"


def decode(text: str) -> LinkPayload:
    """A payload from ``shlink:/…`` or a viewer URL holding ``#shlink:/…``."""
    text = text.strip()
    if not text.startswith(PREFIX):
        _, sep, fragment = text.partition("#")
        if not sep or not fragment.startswith(PREFIX):
            raise InvalidLink("not a SMART Health Link (no shlink:/ payload)")
        text = fragment
    try:
        body = orjson.loads(b64url_decode(text[len(PREFIX) :]))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidLink("the shlink:/ payload is not base64url JSON") from None
    if not isinstance(body, dict):
        raise InvalidLink("the shlink:/ payload is not a JSON object")
    url, key = body.get("url"), body.get("key")
    if not isinstance(url, str) or not isinstance(key, str):
        raise InvalidLink("the payload needs string url and key")
    exp, flag, label, v = body.get("exp"), body.get("flag", ""), body.get("label"), body.get("v")
    if exp is not None and not isinstance(exp, int | float):
        raise InvalidLink("exp must be a number (epoch seconds)")
    if not isinstance(flag, str) or (label is not None and not isinstance(label, str)):
        raise InvalidLink("flag and label must be strings")
    return LinkPayload(
        url=url,
        key=key,
        exp=int(exp) if exp is not None else None,
        flag=flag,
        label=label,
        v=v if isinstance(v, int) else None,
    )
