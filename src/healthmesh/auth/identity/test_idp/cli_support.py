"""Synchronous entry points for the CLI and scripts (each runs its own event loop)."""

from __future__ import annotations

import asyncio

from healthmesh.auth.identity.test_idp.accounts import (
    DemoAccount,
    demo_accounts,
    provision_accounts,
)
from healthmesh.store.identity_provider import IdpStore
from healthmesh.store.repository import Repository


def provision_accounts_sync(
    database_url: str, *, patient_ids: list[str] | None = None, limit: int | None = None
) -> list[DemoAccount]:
    """`healthmesh idp accounts`: an account for each Patient (or each of ``patient_ids``)."""

    async def main() -> list[DemoAccount]:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            return await provision_accounts(
                repository, IdpStore(repository.pool), patient_ids=patient_ids, limit=limit
            )
        finally:
            await repository.close()

    return asyncio.run(main())


def demo_accounts_sync(database_url: str, limit: int = 5) -> list[DemoAccount]:
    """A few provisioned accounts (provisioning first when there are none): for `demo`."""

    async def main() -> list[DemoAccount]:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            store = IdpStore(repository.pool)
            found = await demo_accounts(store, limit=limit)
            if not found:
                await provision_accounts(repository, store, limit=limit)
                found = await demo_accounts(store, limit=limit)
            return found
        finally:
            await repository.close()

    return asyncio.run(main())
