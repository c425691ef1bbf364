"""PKCE, S256 only (RFC 7636; SMART App Launch 2.2 §app-launch: `plain` is never accepted)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: code_verifier = 43*128 unreserved characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# §4.2: the S256 challenge is BASE64URL(SHA256(verifier)) without padding: 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def challenge_problem(challenge: str | None, method: str | None) -> str | None:
    """Why an authorization request's PKCE parameters are refused, or None when acceptable."""
    if not challenge:
        return "code_challenge is required (PKCE, RFC 7636)"
    if method != "S256":
        return "code_challenge_method must be S256; plain and absent are not accepted"
    if not _CHALLENGE.fullmatch(challenge):
        return "code_challenge must be the 43-character base64url SHA-256 of the verifier"
    return None


def verifies(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 §4.6: the verifier's S256 equals the stored challenge (constant-time)."""
    if not verifier or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
