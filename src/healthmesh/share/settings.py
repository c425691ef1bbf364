"""Tunables of sharing, with the limits the IG sets (SPECS.md §5, §7)."""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_LOCATION_TTL = 3600  # SHL IG: file locations are valid for at most one hour


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareSettings:
    # The origin that link urls start with, e.g. "https://share.example.org"; the request's
    # origin when unset. A url is this + "/shl/" + 43 characters, and must stay ≤ 128.
    public_base: str | None = None
    # A viewer to put links behind ("https://viewer.example/" → "…/#shlink:/…"); optional.
    viewer: str | None = None
    passcode_attempts: int = 10  # lifetime budget of wrong passcodes per P link
    location_ttl: int = 600  # seconds a manifest's file location stays valid (≤ 3600)
    poll_window: int = 60  # L links: at most poll_limit manifest requests per window
    poll_limit: int = 30
    max_recipient: int = 256  # characters of the receiver's self-description
    # SMART Health Card issuer (iss, https, no trailing slash); derived from the request
    # ("<origin>/shc") when unset.
    issuer: str | None = None
    # The public OAuth client the patient's page (GET /share) signs in as, with the
    # authorization code flow + PKCE; its redirect URI must be "<origin>/share".
    page_client: str = "healthmesh-demo"

    def __post_init__(self) -> None:
        if not 0 < self.location_ttl <= MAX_LOCATION_TTL:
            raise ValueError(f"location_ttl must be 1..{MAX_LOCATION_TTL} s")
        if self.passcode_attempts < 1 or self.poll_limit < 1 or self.poll_window < 1:
            raise ValueError("passcode_attempts, poll_limit and poll_window must be positive")
        if self.public_base is not None and len(self.public_base.rstrip("/")) + 48 > 128:
            raise ValueError("public_base is too long for 128-character link urls")
        if self.issuer is not None and self.issuer.endswith("/"):
            raise ValueError("the SHC issuer must not end with '/'")

    @staticmethod
    def from_env() -> ShareSettings:
        values: dict[str, object] = {}
        for name, env in (
            ("public_base", "HEALTHMESH_SHARE_BASE"),
            ("viewer", "HEALTHMESH_SHARE_VIEWER"),
            ("issuer", "HEALTHMESH_SHC_ISSUER"),
            ("page_client", "HEALTHMESH_SHARE_PAGE_CLIENT"),
        ):
            if env in os.environ:
                values[name] = os.environ[env].rstrip("/") if name != "viewer" else os.environ[env]
        for name in ("passcode_attempts", "location_ttl", "poll_window", "poll_limit"):
            env = f"HEALTHMESH_SHARE_{name.upper()}"
            if env in os.environ:
                values[name] = int(os.environ[env])
        return ShareSettings(**values)  # type: ignore[arg-type]
