"""Passcodes of P links, kept as scrypt digests (a stolen table does not give them away).

Passcodes are short, so the real defence is the lifetime attempt limit (manifest.py); the
slow hash only keeps a database copy from revealing them outright.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2**12, 8, 1  # a few ms: every guess already spends a lifetime attempt
MAX_PASSCODE = 256


def hash_passcode(passcode: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(passcode.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return digest, salt


def check_passcode(passcode: str, digest: bytes, salt: bytes) -> bool:
    return hmac.compare_digest(hash_passcode(passcode, salt)[0], digest)
