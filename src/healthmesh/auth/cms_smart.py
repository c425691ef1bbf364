"""Patient access without a portal: the ``cms_smart`` v1 client-assertion extension (SPECS.md §3).

The app's client assertion carries ``extensions.cms_smart = {version: "1", purpose_of_use:
"PATRQT", id_token}`` with an IAL2 id_token from an identity provider. Here: the shape.
Who the id_token names — verifying it against the allowed identity providers and matching
exactly one local Patient — is the :class:`PatientIdentifier`'s job (healthmesh.auth.identity
implements it; the application wires it in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from healthmesh.auth.errors import OAuthError


class IdentityRefused(Exception):
    """The id_token does not identify exactly one patient here. ``reason`` goes to the client:
    it says what failed (expired, untrusted issuer, IAL < 2, no unique match), never whom."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refusal_reason(error: Exception) -> str | None:
    """The client-facing reason when ``error`` is an identity refusal, else None.

    An :class:`IdentityRefused` of this module, or any exception carrying a string
    ``reason`` (an identity module may define its own refusal class with more detail).
    """
    reason = getattr(error, "reason", None)
    if isinstance(error, IdentityRefused) or isinstance(reason, str):
        return reason if isinstance(reason, str) else str(error)
    return None


class PatientIdentifier(Protocol):
    async def patient_for(self, id_token: str) -> str:
        """The id of the one local Patient the IAL2 ``id_token`` identifies.

        Raise :class:`IdentityRefused` otherwise (bad signature, untrusted issuer, expired,
        replayed, IAL below 2, zero or several matches) — or any exception with a string
        ``reason`` attribute, which is treated the same way.
        """
        ...


class NoPatientIdentifier:
    """Until identity verification is wired in, cms_smart requests are refused, clearly."""

    async def patient_for(self, id_token: str) -> str:
        raise IdentityRefused("patient identification by id_token is not configured here")


@dataclass(frozen=True, slots=True)
class CmsSmartRequest:
    purpose_of_use: str
    id_token: str
    consent_policy: str | None = None


def cms_smart_extension(claims: dict[str, Any]) -> CmsSmartRequest | None:
    """The assertion's cms_smart extension, checked for shape; None when there is none."""
    extensions = claims.get("extensions")
    if extensions is None:
        return None
    if not isinstance(extensions, dict):
        raise OAuthError("invalid_request", "client_assertion's extensions must be an object")
    value = extensions.get("cms_smart")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise OAuthError("invalid_request", "extensions.cms_smart must be an object")
    if value.get("version") != "1":
        raise OAuthError("invalid_request", 'extensions.cms_smart.version must be "1"')
    if value.get("purpose_of_use") != "PATRQT":
        raise OAuthError("invalid_request", 'extensions.cms_smart.purpose_of_use must be "PATRQT"')
    id_token = value.get("id_token")
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise OAuthError("invalid_request", "extensions.cms_smart.id_token must be a signed JWT")
    policy = value.get("consent_policy")
    if policy is not None and _text(policy) is None:
        raise OAuthError("invalid_request", "extensions.cms_smart.consent_policy must be a string")
    return CmsSmartRequest("PATRQT", id_token, policy)


def _text(value: object) -> str | None:
    """A short printable string (it is stored, and shown in audit), or None."""
    if isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable():
        return value
    return None


@dataclass(frozen=True, slots=True)
class B2bRequest:
    organization_id: str
    purpose_of_use: str


def hl7_b2b_extension(claims: dict[str, Any]) -> B2bRequest | None:
    """The assertion's HL7 FAST / UDAP ``hl7-b2b`` extension: who the organization is, and why."""
    extensions = claims.get("extensions")
    if not isinstance(extensions, dict) or extensions.get("hl7-b2b") is None:
        return None
    value = extensions["hl7-b2b"]
    if not isinstance(value, dict):
        raise OAuthError("invalid_request", "extensions.hl7-b2b must be an object")
    organization = value.get("organization_id")
    purpose = value.get("purpose_of_use")
    if isinstance(purpose, list) and len(purpose) == 1:
        purpose = purpose[0]  # UDAP B2B allows an array; a grant records one purpose
    organization, purpose = _text(organization), _text(purpose)
    if organization is None:
        raise OAuthError("invalid_request", "extensions.hl7-b2b.organization_id is required")
    if purpose is None:
        raise OAuthError("invalid_request", "extensions.hl7-b2b.purpose_of_use is required")
    return B2bRequest(organization, purpose)
