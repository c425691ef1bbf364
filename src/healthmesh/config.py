"""Run-time settings of a HealthMesh node, from flags or HEALTHMESH_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from healthmesh.auth.settings import AuthSettings
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
    share: ShareSettings = field(default_factory=ShareSettings)

    @staticmethod
    def from_env(database_url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {"database_url": database_url}
        if "HEALTHMESH_BASE_URL" in os.environ:
            values["base_url"] = os.environ["HEALTHMESH_BASE_URL"].rstrip("/")
        if "HEALTHMESH_MAX_BODY_BYTES" in os.environ:
            values["max_body_bytes"] = int(os.environ["HEALTHMESH_MAX_BODY_BYTES"])
        values["auth"] = AuthSettings.from_env()
        values["share"] = ShareSettings.from_env()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**values)  # type: ignore[arg-type]
