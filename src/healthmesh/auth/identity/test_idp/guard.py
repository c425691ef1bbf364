"""The production guard: the test identity provider never runs where real people could be.

It logs in synthetic people with passwords anyone can print, so it refuses to start when the
environment says production (HEALTHMESH_ENV=production), whatever the settings say.
"""

from __future__ import annotations

import os


class IdpNotAllowedInProduction(RuntimeError):
    """Raised when the test IdP is asked for in a production environment."""


PRODUCTION_VALUES = frozenset({"production", "prod"})


def ensure_not_production() -> None:
    if os.environ.get("HEALTHMESH_ENV", "").strip().lower() in PRODUCTION_VALUES:
        raise IdpNotAllowedInProduction(
            "the TEST identity provider (synthetic people only) refuses to start with "
            "HEALTHMESH_ENV=production; turn test_identity_provider off"
        )
