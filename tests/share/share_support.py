"""Helpers for the sharing tests: a secured node, patient tokens, an independent decryptor."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import cv2
import httpx
import numpy as np
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from healthmesh.auth.clients import Client
from healthmesh.auth.server import AuthServer
from healthmesh.config import Settings
from healthmesh.share.settings import ShareSettings

from conftest import ServerThread
from support import SHARED

FIXTURES = Path(__file__).parent / "fixtures"
SHL_DATA = SHARED / "data/shl"
SHC_DATA = SHARED / "data/shc"
CLIENT_ID = f"share-tests-{uuid.uuid4().hex[:8]}"
T = TypeVar("T")


def with_auth(database_url: str, body: Callable[[AuthServer], Awaitable[T]]) -> T:
    """Run ``body`` against an AuthServer on its own pool (another process, in effect)."""

    async def go() -> T:
        pool: Any = AsyncConnectionPool(
            database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
        )
        await pool.open()
        auth = AuthServer(pool)
        try:
            await auth.start()
            return await body(auth)
        finally:
            await auth.close()
            await pool.close()

    return asyncio.run(go())


def summary_bundle() -> dict[str, Any]:
    value: dict[str, Any] = json.loads((FIXTURES / "summary-bundle.json").read_text())
    return value


def register_client(database_url: str) -> None:
    async def body(auth: AuthServer) -> None:
        if await auth.clients.get(CLIENT_ID) is None:
            await auth.clients.add(
                Client(
                    client_id=CLIENT_ID,
                    name="Sharing tests",
                    scope="*",
                    redirect_uris=("http://127.0.0.1/callback",),
                )
            )

    with_auth(database_url, body)


def token(
    server: ServerThread, database_url: str, scope: str, *, patient: str | None = None
) -> str:
    """A real access token from the node's own authorization server (grant + signed JWT)."""

    async def mint(auth: AuthServer) -> str:
        grant = await auth.grants.create(
            client_id=CLIENT_ID,
            kind="cli",
            subject=patient or "share-admin",
            scope=scope,
            lifetime=timedelta(hours=1),
            patient=patient,
            fhir_user=f"Patient/{patient}" if patient else None,
        )
        issued = await auth.issuer.issue_access_token(grant, issuer=server.base, lifetime=900)
        return issued.access_token

    return with_auth(database_url, mint)


def origin(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.port}"


def patient_client(server: ServerThread, database_url: str, patient: str) -> httpx.Client:
    bearer = token(server, database_url, "patient/*.rs launch/patient", patient=patient)
    return httpx.Client(
        base_url=origin(server), timeout=30, headers={"Authorization": f"Bearer {bearer}"}
    )


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def independent_decrypt(token: str, key: str) -> tuple[bytes, dict[str, Any]]:
    """RFC 7516 compact JWE, alg dir + A256GCM, by hand with `cryptography` (not joserfc):
    AAD is the ASCII of the encoded protected header; zip DEF is raw DEFLATE."""
    header_b64, encrypted_key, iv, ciphertext, tag = token.strip().split(".")
    assert encrypted_key == ""  # alg dir: no encrypted key
    header = json.loads(b64url_decode(header_b64))
    plain = AESGCM(b64url_decode(key)).decrypt(
        b64url_decode(iv), b64url_decode(ciphertext) + b64url_decode(tag), header_b64.encode()
    )
    if header.get("zip") == "DEF":
        plain = zlib.decompress(plain, -zlib.MAX_WBITS)
    return plain, header


def decode_qr_png(png: bytes) -> str:
    """Read a QR code with OpenCV (two of its detectors), independent of segno."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a PNG OpenCV can read"
    value, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    if not value:
        value = cv2.QRCodeDetectorAruco().detectAndDecode(image)[0]
    return str(value)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


VIEWER = "https://viewer.example/"
SHARE_SETTINGS = ShareSettings(
    viewer=VIEWER, passcode_attempts=10, poll_limit=5, poll_window=3600, location_ttl=600
)


def secured_node(database_url: str) -> ServerThread:
    """A node that requires tokens (no --open), with the sharing limits these tests assume;
    use it as a context manager. Several of them on one database act as several processes."""
    return ServerThread(Settings(database_url=database_url, open=False, share=SHARE_SETTINGS))


class Patients:
    """HTTP clients on the node, each holding a patient token; closed together."""

    def __init__(self, server: ServerThread, database_url: str) -> None:
        self.server, self.database_url = server, database_url
        self.opened: list[httpx.Client] = []

    def __call__(self, patient: str) -> httpx.Client:
        client = patient_client(self.server, self.database_url, patient)
        self.opened.append(client)
        return client

    def close(self) -> None:
        for client in self.opened:
            client.close()
