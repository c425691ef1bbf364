"""A node running WITHOUT --open, and tokens for it from its own authorization server.

Tokens are minted the way the token endpoint does it (a grant in auth_grant, then a signed
JWT for it), so tests of enforcement can ask for any scope, patient, organization and purpose
without replaying an OAuth flow each time (the flows have their own tests in tests/auth).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.clients import Client
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings

from conftest import ServerThread


async def _with_auth(database_url: str, body: Any) -> Any:
    pool: Any = AsyncConnectionPool(
        database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    auth = AuthServer(pool)
    try:
        await auth.start()
        return await body(auth)
    finally:
        await auth.close()
        await pool.close()


class SecuredNode:
    """The secured server, and a way to mint tokens for it."""

    def __init__(self, server: ServerThread, database_url: str) -> None:
        self.server = server
        self.database_url = database_url
        self._clients: set[str] = set()

    @property
    def base(self) -> str:
        return self.server.base

    def token(
        self,
        scope: str,
        *,
        client_id: str = "test-app",
        patient: str | None = None,
        fhir_user: str | None = None,
        organization: str | None = None,
        purpose_of_use: str | None = None,
    ) -> str:
        (token,) = self.tokens(
            [
                {
                    "scope": scope,
                    "client_id": client_id,
                    "patient": patient,
                    "fhir_user": fhir_user,
                    "organization": organization,
                    "purpose_of_use": purpose_of_use,
                }
            ]
        )
        return token

    def tokens(self, requests: list[dict[str, Any]]) -> list[str]:
        """Many tokens at once (keyword arguments of :meth:`token` each), through one
        authorization server: a third of a second each on a busy machine, one at a time."""
        unknown = {r.get("client_id", "test-app") for r in requests} - self._clients
        self._clients |= unknown

        async def mint(auth: AuthServer) -> list[str]:
            for client_id in sorted(unknown):
                if await auth.clients.get(client_id) is None:
                    await auth.clients.add(
                        Client(
                            client_id=client_id,
                            name=f"Test app {client_id}",
                            scope="*",
                            redirect_uris=("http://127.0.0.1/callback",),
                        )
                    )

            async def one(r: dict[str, Any]) -> str:
                client_id = r.get("client_id", "test-app")
                grant = await auth.grants.create(
                    client_id=client_id,
                    kind="cli",
                    subject=r.get("fhir_user") or f"{client_id}-user",
                    scope=r["scope"],
                    lifetime=timedelta(hours=1),
                    patient=r.get("patient"),
                    fhir_user=r.get("fhir_user"),
                    organization=r.get("organization"),
                    purpose_of_use=r.get("purpose_of_use"),
                )
                issued = await auth.issuer.issue_access_token(grant, issuer=self.base, lifetime=600)
                return issued.access_token

            return list(await asyncio.gather(*(one(r) for r in requests)))

        tokens: list[str] = asyncio.run(_with_auth(self.database_url, mint))
        return tokens

    def client(self, scope: str | None = None, **context: Any) -> httpx.Client:
        headers = {"Accept": "application/fhir+json"}
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.token(scope, **context)}"
        return httpx.Client(base_url=self.base, timeout=30, headers=headers)


@contextmanager
def secured_node(database_url: str, **settings: Any) -> Iterator[SecuredNode]:
    with ServerThread(Settings(database_url=database_url, open=False, **settings)) as server:
        yield SecuredNode(server, database_url)
