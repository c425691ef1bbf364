"""Registering an app from its software statement (RFC 7591): keys of the trusted app
libraries, verification (registration.py), and the new client in the client store."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from healthmesh.auth.clients import Client, ClientError, ClientStore, new_client_id
from healthmesh.auth.registration import (
    AppLibrary,
    RegistrationRefused,
    client_metadata,
    library_for,
    statement_issuer,
)

log = logging.getLogger(__name__)

# Scopes a registered app may ask patients for when its statement names none: a patient app.
DEFAULT_SCOPE = (
    "openid fhirUser profile launch launch/patient offline_access online_access patient/*.rs"
)
_CACHE_SECONDS = 300.0


class LibraryKeys:
    """Each library's JWK Set: inline, or fetched from its jwks_uri and cached for 5 min."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        self.http = http or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._cache: dict[str, tuple[float, KeySet]] = {}

    async def close(self) -> None:
        await self.http.aclose()

    async def keys(self, library: AppLibrary) -> KeySet:
        try:
            if library.jwks is not None:
                return KeySet.import_key_set(dict(library.jwks))  # type: ignore[arg-type]
            assert library.jwks_uri is not None
            cached = self._cache.get(library.jwks_uri)
            if cached and time.monotonic() - cached[0] < _CACHE_SECONDS:
                return cached[1]
            response = await self.http.get(library.jwks_uri, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, JoseError, ValueError, TypeError) as exc:
            log.warning("app library %s: keys unavailable (%s)", library.issuer, type(exc).__name__)
            raise RegistrationRefused(
                "invalid_software_statement", "the app library's keys are unavailable"
            ) from None
        self._cache[library.jwks_uri] = (time.monotonic(), keys)
        return keys


async def register(
    body: object,
    *,
    libraries: Sequence[AppLibrary],
    keys: LibraryKeys,
    clients: ClientStore,
) -> dict[str, Any]:
    """RFC 7591 §3.2.1 client information response for a new client, or RegistrationRefused."""
    library = library_for(statement_issuer(body), libraries)
    metadata = client_metadata(body, library, await keys.keys(library))
    confidential = not metadata.public
    client = Client(
        client_id=new_client_id(),
        name=metadata.client_name,
        token_endpoint_auth_method=metadata.token_endpoint_auth_method,
        redirect_uris=metadata.redirect_uris,
        # A public client authenticates with nothing: keys it lists are not kept (ClientStore
        # refuses keys on public clients, so nothing could later treat them as credentials).
        jwks=dict(metadata.jwks) if confidential and metadata.jwks is not None else None,
        jwks_uri=metadata.jwks_uri if confidential else None,
        scope=metadata.scope or DEFAULT_SCOPE,
        grant_types=metadata.grant_types,
        software_id=metadata.software_id,
    )
    try:
        await clients.add(client)
    except ClientError as exc:
        raise RegistrationRefused("invalid_client_metadata", str(exc)) from None
    response = metadata.response(client.client_id, int(time.time()))
    response["scope"] = client.scope
    if not confidential:
        response.pop("jwks", None)
        response.pop("jwks_uri", None)
    log.info("registered client %s (software_id %s)", client.client_id, client.software_id)
    return response
