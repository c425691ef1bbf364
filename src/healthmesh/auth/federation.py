"""Which identity providers a node trusts for cms_smart, wired to the token endpoint.

The token endpoint's cms_smart path (auth/backend_services.py) asks a ``PatientIdentifier``
for the local Patient an IAL2 id_token names. This is that identifier for a running node:
the allow-listed providers of ``HEALTHMESH_IDENTITY_PROVIDERS`` (a JSON file, docs/identity.md)
and, when the node serves it, the built-in TEST identity provider.

The test IdP's issuer is ``<origin>/idp``, and a node without a configured base URL learns
its origin only from requests; so an id_token whose issuer ends in ``/idp`` is checked against
the test IdP's own keys (read from the database, never fetched) when, and only when, the test
IdP is served. Its signature is what is trusted, not its ``iss``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson

from healthmesh.auth.cms_smart import IdentityRefused
from healthmesh.auth.identity.errors import IdentityRefused as IdentityError
from healthmesh.auth.identity.patients import Ial2PatientIdentifier
from healthmesh.auth.identity.providers import IdentityProviders, load_providers
from healthmesh.auth.identity.test_idp import provider_of_test_idp
from healthmesh.auth.identity.test_idp.app import BUILTIN_CLIENT
from healthmesh.auth.replay import ReplayGuard
from healthmesh.store.repository import Repository

TEST_IDP_SUFFIX = "/idp"


def configured_providers() -> IdentityProviders:
    path = os.environ.get("HEALTHMESH_IDENTITY_PROVIDERS")
    return IdentityProviders(load_providers(Path(path)) if path else ())


def _unverified_issuer(token: str) -> str | None:
    """``iss`` of a JWS, unverified: only to pick which keys will verify it."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


class NodeIdentifier:
    """The PatientIdentifier of a node: ``await patient_for(id_token) -> Patient id``."""

    def __init__(
        self,
        repository: Repository,
        replay: ReplayGuard,
        *,
        providers: IdentityProviders | None = None,
        test_idp: bool = False,
    ) -> None:
        self.repository = repository
        self.providers = providers if providers is not None else configured_providers()
        self.test_idp = test_idp
        self.identifier = Ial2PatientIdentifier(repository, self.providers, replay)

    async def _trust_test_idp(self, issuer: str) -> None:
        if self.providers.get(issuer) is None:
            self.providers.add(
                await provider_of_test_idp(
                    self.repository.pool, issuer=issuer, audiences=(BUILTIN_CLIENT,)
                )
            )

    async def patient_for(self, id_token: str) -> str:
        issuer = _unverified_issuer(id_token)
        if self.test_idp and issuer is not None and issuer.endswith(TEST_IDP_SUFFIX):
            await self._trust_test_idp(issuer)
        try:
            return await self.identifier.patient_for(id_token)
        except IdentityError as refused:  # the token endpoint's refusal type, same reason
            raise IdentityRefused(refused.reason) from None
