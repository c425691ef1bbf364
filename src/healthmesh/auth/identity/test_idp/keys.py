"""The test IdP's signing keys: created once, kept in PostgreSQL, shared by all processes.

RS256 because OpenID Connect Core §15.1 makes it the one algorithm every relying party must
support; kid = RFC 7638 thumbprint.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from healthmesh.store.identity_provider import IdpStore

ALG = "RS256"


class SigningKeys:
    def __init__(self, store: IdpStore) -> None:
        self.store = store
        self._keys: list[RSAKey] | None = None

    async def keys(self) -> list[RSAKey]:
        """Unretired keys, newest first; the first call creates one if there is none."""
        if self._keys is None:
            rows = await self.store.signing_keys()
            if not rows:
                key = RSAKey.generate_key(2048, auto_kid=True)
                await self.store.add_signing_key_once(
                    str(key.kid), ALG, json.dumps(key.as_dict(private=True))
                )
                rows = await self.store.signing_keys()
            self._keys = [RSAKey.import_key(json.loads(row[2])) for row in rows]
        return self._keys

    async def jwks(self) -> dict[str, Any]:
        """The public JWKS (RFC 7517 §5): no private member ever leaves."""
        public = []
        for key in await self.keys():
            entry: dict[str, Any] = dict(key.as_dict(private=False))
            entry.update({"use": "sig", "alg": ALG, "kid": key.kid})
            public.append(entry)
        return {"keys": public}

    async def sign(self, claims: dict[str, Any]) -> str:
        key = (await self.keys())[0]
        return jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[ALG])
