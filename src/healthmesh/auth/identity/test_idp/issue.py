"""IAL2 id_tokens as the test IdP issues them: the CMS flat claim shape (SPECS.md §3) with
identity_assurance_level 2, auth_time, a fresh jti, amr pwd+otp (AAL2)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

ID_TOKEN_LIFETIME = 300  # seconds: an id_token is for the moment of login


def id_token_claims(
    *,
    issuer: str,
    subject: str,
    audience: str,
    person: Mapping[str, Any],
    auth_time: int,
    nonce: str | None = None,
    now: int | None = None,
    lifetime: int = ID_TOKEN_LIFETIME,
) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "auth_time": auth_time,
        "jti": uuid.uuid4().hex,
        "identity_assurance_level": 2,
        "amr": ["pwd", "otp"],  # RFC 8176: password and one-time code, AAL2
        "acr": "http://idmanagement.gov/ns/assurance/ial/2",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    for key, value in person.items():
        claims.setdefault(key, value)
    return claims


def person_of(account_claims: str) -> dict[str, Any]:
    value = json.loads(account_claims)
    assert isinstance(value, dict)
    return value
