"""SHL file encryption: JWE compact, ``alg: dir``, ``enc: A256GCM`` (SHL IG "Encrypting files").

The key is the link's 32-byte secret; ``kid`` is its RFC 7638 thumbprint (what real-world
files carry). ``zip: DEF`` is raw DEFLATE (RFC 7516 §4.1.3). joserfc caps ciphertext at 64 KB
and decompressed content at 250 KiB by default: health records are larger, so this module
uses its own registry with higher limits (SPECS.md §5).
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

from joserfc import jwe
from joserfc._rfc7516.models import JWEAlgModel, JWEEncModel, JWEZipModel
from joserfc._rfc7516.registry import AlgorithmsDict, JWERegistry
from joserfc.errors import ExceededSizeError, JoseError
from joserfc.jwk import OctKey

MAX_PLAINTEXT = 64 * 1024 * 1024  # 64 MiB: a whole record with PDFs, never a zip bomb's worth
KEY_BYTES = 32


class DecryptionFailed(Exception):
    """A file that is not a JWE we can open with this key (wrong key, tampered, malformed)."""


class _RawDeflate(JWEZipModel):
    name = "DEF"
    description = "raw DEFLATE (RFC 1951)"

    def compress(self, s: bytes) -> bytes:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return packer.compress(s) + packer.flush()

    def decompress(self, s: bytes) -> bytes:
        unpacker = zlib.decompressobj(-zlib.MAX_WBITS)
        value = unpacker.decompress(s, MAX_PLAINTEXT)
        if unpacker.unconsumed_tail:
            raise ExceededSizeError(f"decompressed content exceeds {MAX_PLAINTEXT} bytes")
        return value


def _algorithms() -> AlgorithmsDict:
    base = jwe.JWERegistry.algorithms
    alg: dict[str, JWEAlgModel] = {"dir": base["alg"]["dir"]}
    enc: dict[str, JWEEncModel] = {"A256GCM": base["enc"]["A256GCM"]}
    return {"alg": alg, "enc": enc, "zip": {"DEF": _RawDeflate()}}


class ShlRegistry(JWERegistry):
    """Only dir + A256GCM (+ DEF), with room for whole health records."""

    algorithms = _algorithms()
    max_ciphertext_length = MAX_PLAINTEXT + 1024


REGISTRY = ShlRegistry(algorithms=["dir", "A256GCM", "DEF"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def oct_key(key: str) -> OctKey:
    """The link key (43 chars of base64url) as a JWK; ValueError unless it is 32 bytes."""
    raw = b64url_decode(key)
    if len(raw) != KEY_BYTES or len(key) != 43:
        raise ValueError("an SHL key is 32 bytes, 43 characters of base64url")
    return OctKey.import_key(raw)


def key_id(key: str) -> str:
    """RFC 7638 thumbprint of the oct key: the ``kid`` real-world SHL files carry."""
    return oct_key(key).thumbprint()


def encrypt(plaintext: bytes, key: str, content_type: str, *, compress: bool = True) -> str:
    """A JWE compact string; joserfc draws a fresh 96-bit IV for every call."""
    header: dict[str, Any] = {"alg": "dir", "enc": "A256GCM", "cty": content_type}
    header["kid"] = key_id(key)
    if compress:
        header["zip"] = "DEF"
    return jwe.encrypt_compact(header, plaintext, oct_key(key), registry=REGISTRY)


def decrypt(token: str, key: str) -> tuple[bytes, dict[str, Any]]:
    """The plaintext and the protected header; DecryptionFailed on any failure."""
    try:
        found = jwe.decrypt_compact(token.strip(), oct_key(key), registry=REGISTRY)
    except (JoseError, ValueError) as error:
        raise DecryptionFailed(f"the file could not be decrypted: {type(error).__name__}") from None
    if found.plaintext is None:
        raise DecryptionFailed("the file has no content")
    return found.plaintext, dict(found.protected)
