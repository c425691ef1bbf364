"""The built-in TEST identity provider — synthetic people only (docs/identity.md).

- :func:`mount_test_idp` mounts it at ``/idp`` of a Starlette app (refuses in production).
- :func:`provision_accounts` / :func:`demo_accounts` — one login per Patient in the store
  (``_sync`` variants for the CLI: ``demo_accounts_sync(url, 3)`` is what `demo` prints).
- :func:`register_client` — a relying party (client id, redirect URIs, optional secret).
- :func:`mint_ial2_id_token` (and ``_sync``) — an IAL2 id_token for a person, for tests.
- :func:`provider_of_test_idp` (and ``_sync``) — the IdP as an allow-listed IdentityProvider.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from starlette.applications import Starlette

from healthmesh.auth.identity.test_idp.accounts import (
    DemoAccount,
    claims_of_patient,
    demo_accounts,
    provision_accounts,
)
from healthmesh.auth.identity.test_idp.app import BUILTIN_CLIENT, OidcTestProvider
from healthmesh.auth.identity.test_idp.cli_support import (
    demo_accounts_sync,
    provision_accounts_sync,
)
from healthmesh.auth.identity.test_idp.guard import IdpNotAllowedInProduction, ensure_not_production
from healthmesh.auth.identity.test_idp.mint import (
    mint_ial2_id_token,
    mint_ial2_id_token_sync,
    provider_of_test_idp,
    provider_of_test_idp_sync,
)
from healthmesh.auth.identity.test_idp.pages import LABEL
from healthmesh.store.identity_provider import IdpStore, Pool

MOUNT_PATH = "/idp"


def mount_test_idp(app: Starlette, pool: Pool, *, base_url: str | None = None) -> None:
    """Serve the test IdP at ``/idp`` of ``app``; its issuer is ``<origin>/idp``.

    With the node's configured public ``base_url`` (Settings.base_url, ".../fhir") the
    issuer is fixed to that origin; otherwise it follows the request's Host.
    """
    ensure_not_production()
    issuer = None
    if base_url:
        parts = urlsplit(base_url)
        issuer = f"{parts.scheme}://{parts.netloc}{MOUNT_PATH}"
    app.mount(MOUNT_PATH, OidcTestProvider(pool, issuer=issuer).app())


async def register_client(
    pool: Pool, client_id: str, redirect_uris: list[str], secret: str | None = None
) -> None:
    """Register (or update) a relying party; ``secret`` None makes it a public PKCE client."""
    digest = hashlib.sha256(secret.encode()).hexdigest() if secret is not None else None
    await IdpStore(pool).put_client(client_id, digest, redirect_uris)


__all__ = [
    "BUILTIN_CLIENT",
    "LABEL",
    "MOUNT_PATH",
    "DemoAccount",
    "IdpNotAllowedInProduction",
    "IdpStore",
    "OidcTestProvider",
    "claims_of_patient",
    "demo_accounts",
    "demo_accounts_sync",
    "ensure_not_production",
    "mint_ial2_id_token",
    "mint_ial2_id_token_sync",
    "mount_test_idp",
    "provider_of_test_idp",
    "provider_of_test_idp_sync",
    "provision_accounts",
    "provision_accounts_sync",
    "register_client",
]
