"""Sharing, assembled: links, manifests, the card issuer, and what creates a share's content.

One :class:`Sharing` per application (``app.state.share``). ``summaries`` is where a
patient's own ``$summary`` comes from when a share is created without a Bundle: the IPS work
plugs in there; until it does, a share needs an explicit Bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.grant import AccessGrant
from healthmesh.share.issuer import CardIssuer, IssuerKeys
from healthmesh.share.links import LinkStore
from healthmesh.share.manifest import ManifestService
from healthmesh.share.settings import ShareSettings

if TYPE_CHECKING:
    from healthmesh.share.content import ShareContents

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class SummarySource(Protocol):
    async def summary(
        self, grant: AccessGrant, contents: ShareContents | None = None
    ) -> dict[str, Any] | None:
        """The Bundle of ``grant.patient``'s record that ``contents`` asks for, as ``grant``
        may read it; None when that patient is not known."""
        ...


class NoSummaries:
    async def summary(
        self, grant: AccessGrant, contents: ShareContents | None = None
    ) -> dict[str, Any] | None:
        return None


class Sharing:
    def __init__(self, pool: Pool, settings: ShareSettings) -> None:
        self.settings = settings
        self.links = LinkStore(pool, attempts=settings.passcode_attempts)
        self.manifests = ManifestService(pool, settings)
        self.issuer_keys = IssuerKeys(pool)
        self.cards = CardIssuer(pool, self.issuer_keys)
        self.summaries: SummarySource = NoSummaries()

    async def start(self) -> None:
        await self.issuer_keys.ensure_active()
