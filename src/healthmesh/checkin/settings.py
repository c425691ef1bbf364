"""Tunables of the check-in receiver; safe defaults for fetching URLs taken from QR codes."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_RECIPIENT = "HealthMesh clinic check-in"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckinSettings:
    # Who the clinic says it is to the sharing server (SHL IG manifest `recipient`).
    recipient: str = DEFAULT_RECIPIENT
    # A QR code is untrusted input: https to public addresses only, unless this is set (tests,
    # the demo on one machine), which also allows plain http and loopback/private addresses.
    allow_insecure: bool = False
    timeout: float = 10.0  # seconds per request to a sharing server
    max_bytes: int = 16 * 1024 * 1024  # cap of one manifest or file response
    max_files: int = 20  # files of one manifest we fetch at most
    max_image_bytes: int = 12 * 1024 * 1024  # an uploaded photo
    # SMART Health Card issuers whose cards we accept (iss values, keys fetched from
    # iss/.well-known/jwks.json); "self" adds this node's own issuer.
    trusted_issuers: tuple[str, ...] = ("self",)

    def __post_init__(self) -> None:
        if not 0 < len(self.recipient) <= 256:
            raise ValueError("the check-in recipient is 1..256 characters")
        if self.timeout <= 0 or self.max_bytes < 1024 or self.max_files < 1:
            raise ValueError("timeout, max_bytes and max_files must be positive")

    @staticmethod
    def from_env() -> CheckinSettings:
        values: dict[str, object] = {}
        if "HEALTHMESH_CHECKIN_RECIPIENT" in os.environ:
            values["recipient"] = os.environ["HEALTHMESH_CHECKIN_RECIPIENT"]
        if os.environ.get("HEALTHMESH_CHECKIN_ALLOW_INSECURE", "") in ("1", "true", "yes"):
            values["allow_insecure"] = True
        if "HEALTHMESH_CHECKIN_TRUSTED_ISSUERS" in os.environ:
            raw = os.environ["HEALTHMESH_CHECKIN_TRUSTED_ISSUERS"]
            values["trusted_issuers"] = tuple(i.strip() for i in raw.split(",") if i.strip())
        return CheckinSettings(**values)  # type: ignore[arg-type]
