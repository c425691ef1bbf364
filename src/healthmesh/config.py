"""Run-time settings of a HealthMesh node, from flags or HEALTHMESH_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from healthmesh.auth.authcode_settings import AuthCodeSettings
from healthmesh.auth.settings import AuthSettings
from healthmesh.checkin.settings import CheckinSettings
from healthmesh.export.settings import ExportSettings
from healthmesh.share.settings import ShareSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    database_url: str
    # The FHIR base URL clients see (for fullUrl, Location, links); derived from the request
    # when unset, which is right unless a proxy rewrites the host.
    base_url: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    open: bool = False
    pool_size: int = 16
    auth: AuthSettings = field(default_factory=AuthSettings)
    authcode: AuthCodeSettings = field(default_factory=AuthCodeSettings)  # login, registration
    # Serve the TEST identity provider at /idp (synthetic people only; docs/identity.md).
    # On for `demo`, off for `serve` unless --test-idp; refused when HEALTHMESH_ENV=production.
    test_identity_provider: bool = False
    # Network participation when a patient has said nothing (docs/privacy.md): "opt-out"
    # (records are shared, subject to each patient's Consents) or "opt-in" (shared only
    # where a Consent permits). HEALTHMESH_CONSENT_DEFAULT.
    consent_default: str = "opt-out"
    # The audit trail (docs/privacy.md). HEALTHMESH_AUDIT=off records nothing: for benchmarks
    # and operators who audit elsewhere, never for production (docs/security.md).
    audit: bool = True

    def __post_init__(self) -> None:
        if self.consent_default not in ("opt-out", "opt-in"):
            raise ValueError("consent_default is 'opt-out' or 'opt-in'")

    share: ShareSettings = field(default_factory=ShareSettings)
    checkin: CheckinSettings = field(default_factory=CheckinSettings)  # the clinic check-in
    export: ExportSettings = field(default_factory=ExportSettings)  # bulk export (docs/export.md)

    @staticmethod
    def from_env(database_url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {"database_url": database_url}
        if "HEALTHMESH_BASE_URL" in os.environ:
            values["base_url"] = os.environ["HEALTHMESH_BASE_URL"].rstrip("/")
        if "HEALTHMESH_MAX_BODY_BYTES" in os.environ:
            values["max_body_bytes"] = int(os.environ["HEALTHMESH_MAX_BODY_BYTES"])
        values["auth"] = AuthSettings.from_env()
        values["authcode"] = AuthCodeSettings.from_env()
        if "HEALTHMESH_CONSENT_DEFAULT" in os.environ:
            values["consent_default"] = os.environ["HEALTHMESH_CONSENT_DEFAULT"]
        if "HEALTHMESH_AUDIT" in os.environ:
            values["audit"] = _on_off("HEALTHMESH_AUDIT", os.environ["HEALTHMESH_AUDIT"])
        values["share"] = ShareSettings.from_env()
        values["checkin"] = CheckinSettings.from_env()
        values["export"] = ExportSettings.from_env()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)  # type: ignore[arg-type]


def _on_off(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("on", "true", "1", "yes"):
        return True
    if word in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"{name} is 'on' or 'off', not {value!r}")
