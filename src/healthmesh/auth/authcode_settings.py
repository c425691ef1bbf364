"""Settings of the authorization-code flow: where users log in, whose apps may register."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthmesh.auth.registration import AppLibrary

MAX_CODE_LIFETIME = 60  # seconds: the brief's limit; RFC 6749 §4.1.2 recommends ≤ 10 min


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginProvider:
    """The OpenID Connect provider users log in at, with this node as its relying party.

    ``issuer`` may be a path ("/idp"): the provider then lives on this server's own origin,
    as the built-in test identity provider does.
    """

    issuer: str
    client_id: str
    client_secret: str | None = None  # sent as client_secret_post when set (OIDC Core §9)
    scope: str = "openid"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthCodeSettings:
    login: LoginProvider | None = None
    app_libraries: tuple[AppLibrary, ...] = ()
    code_lifetime: int = MAX_CODE_LIFETIME
    pending_lifetime: int = 600  # seconds a user has to log in and decide
    launch_lifetime: int = 3600  # seconds an EHR launch id stays usable

    def __post_init__(self) -> None:
        if not 0 < self.code_lifetime <= MAX_CODE_LIFETIME:
            raise ValueError(f"code_lifetime must be 1..{MAX_CODE_LIFETIME} s")

    @staticmethod
    def from_env() -> AuthCodeSettings:
        """HEALTHMESH_LOGIN_ISSUER / _CLIENT_ID / _CLIENT_SECRET, HEALTHMESH_APP_LIBRARIES.

        HEALTHMESH_APP_LIBRARIES names a JSON file: a list of {issuer, jwks | jwks_uri}.
        """
        login = None
        if os.environ.get("HEALTHMESH_LOGIN_ISSUER"):
            login = LoginProvider(
                issuer=os.environ["HEALTHMESH_LOGIN_ISSUER"],
                client_id=os.environ.get("HEALTHMESH_LOGIN_CLIENT_ID", "healthmesh"),
                client_secret=os.environ.get("HEALTHMESH_LOGIN_CLIENT_SECRET") or None,
            )
        libraries: tuple[AppLibrary, ...] = ()
        path = os.environ.get("HEALTHMESH_APP_LIBRARIES")
        if path:
            libraries = load_app_libraries(Path(path))
        return AuthCodeSettings(login=login, app_libraries=libraries)


def load_app_libraries(path: Path) -> tuple[AppLibrary, ...]:
    entries: Any = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of app libraries")
    libraries = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("issuer"), str):
            raise ValueError(f"{path}: each app library needs an issuer")
        if ("jwks" in entry) == ("jwks_uri" in entry):
            raise ValueError(f"{path}: {entry['issuer']}: give exactly one of jwks, jwks_uri")
        libraries.append(
            AppLibrary(
                issuer=entry["issuer"], jwks=entry.get("jwks"), jwks_uri=entry.get("jwks_uri")
            )
        )
    return tuple(libraries)
