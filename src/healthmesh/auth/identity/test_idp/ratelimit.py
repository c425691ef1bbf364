"""Login rate limits, kept in PostgreSQL so they hold across every server process.

After ``per_user`` failed sign-ins for one username (wrong password or wrong TOTP alike) or
``per_address`` from one client address within ``window``, sign-in answers 429 with
Retry-After (RFC 6585 §4) until the oldest counted failure leaves the window (NIST SP
800-63B §5.2.2: limit failed authentication attempts).
"""

from __future__ import annotations

import math
from datetime import timedelta

from healthmesh.store.identity_provider import IdpStore


class LoginLimiter:
    def __init__(
        self,
        store: IdpStore,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: timedelta = timedelta(minutes=15),
    ) -> None:
        self.store = store
        self.per_user = per_user
        self.per_address = per_address
        self.window = window

    @staticmethod
    def _buckets(username: str, address: str) -> list[str]:
        return [f"user:{username}", f"ip:{address}"]

    async def retry_after(self, username: str, address: str) -> int | None:
        """Seconds to wait when a limit is reached, else None."""
        limits = {f"user:{username}": self.per_user, f"ip:{address}": self.per_address}
        waits = [
            max(1, math.ceil(self.window.total_seconds() - age))
            for bucket, count, age in await self.store.failures(list(limits), self.window)
            if count >= limits[bucket]
        ]
        return max(waits) if waits else None

    async def failed(self, username: str, address: str) -> None:
        await self.store.add_failure(self._buckets(username, address))

    async def succeeded(self, username: str) -> None:
        await self.store.clear_failures(f"user:{username}")
