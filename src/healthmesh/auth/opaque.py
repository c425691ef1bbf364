"""Opaque secrets (codes, cookies, CSRF tokens, launch ids): random, kept only as hashes.

Each has 256 bits from the OS's CSPRNG, so a plain SHA-256 is a sufficient one-way index:
there is nothing to brute-force, and a database dump yields no usable secret.
"""

from __future__ import annotations

import hashlib
import secrets


def mint() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
