"""What a verified access token authorises; the one value the FHIR layer sees of auth.

The authorization server (``auth/server``) issues tokens, the resource server verifies them
into an :class:`AccessGrant`, and enforcement (``auth/scopes``, ``store/access``) turns the
grant into conditions compiled into every query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessGrant:
    """Who asks (client, user, organization), for whom (patient), what (scope) and why."""

    client_id: str
    scope: str  # space-separated SMART scopes as granted, e.g. "patient/Observation.rs openid"
    patient: str | None = None  # the launch context: a Patient id for patient/ scopes
    fhir_user: str | None = None  # "Patient/123", "Practitioner/9" (SMART fhirUser)
    organization: str | None = None  # hl7-b2b organization_id, for backend services
    purpose_of_use: str | None = None  # v3 ActReason: PATRQT, TREAT, HPAYMT, HOPERAT, ...
    token_id: str = ""  # the access token's jti
    grant_id: str = ""  # the authorization it came from (code, refresh family, assertion)
    expires_at: int = 0  # epoch seconds


class InvalidToken(Exception):
    """A bearer token that is missing, malformed, badly signed, expired, revoked or not ours.

    The message is for logs and the OperationOutcome; it never contains the token itself.
    """

    def __init__(self, reason: str, *, error: str = "invalid_token") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error  # RFC 6750 §3.1 error code for WWW-Authenticate


# A question to answer in the same round trip as a token's check: a scalar SQL sub-select
# and its named parameters (%(name)s), or None for nothing to ask.
Question = Callable[[AccessGrant], tuple[str, Mapping[str, object]] | None]


class TokenVerifier(Protocol):
    """Checks a bearer token on every FHIR request (RFC 6750) and says what it grants."""

    async def verify(self, bearer: str, *, audience: str) -> AccessGrant:
        """Raise :class:`InvalidToken` unless ``bearer`` is a live token for ``audience``."""
        ...

    async def verify_and_ask(
        self, bearer: str, *, audience: str, ask: Question
    ) -> tuple[AccessGrant, Any]:
        """:meth:`verify`, and the answer to ``ask(grant)`` (None when it asks nothing)."""
        ...
