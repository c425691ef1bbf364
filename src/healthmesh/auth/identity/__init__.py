"""IAL2 identity: allow-listed identity providers, id_token verification, patient matching,
and the built-in TEST identity provider (docs/identity.md).

Public surface (names kept stable for the token endpoint and the authorization-code flow):

- :class:`IdentityRefused` — every "no", with ``.reason`` (text) and ``.code`` (stable).
- :class:`IdentityProvider`, :class:`IdentityProviders`, :func:`load_providers` — the allow-list.
- :func:`verify_ial2_id_token` → :class:`IdentityClaims` (one shape for CSP, TEFCA, OIDC4IDA).
- :class:`PatientMatcher` → :class:`MatchDecision`; :class:`Ial2PatientIdentifier` with
  ``async patient_for(id_token) -> str`` (the PatientIdentifier port) and ``identify``.
"""

from healthmesh.auth.identity.claims import IdentityClaims, PersonName, PostalAddress, read_claims
from healthmesh.auth.identity.errors import IdentityRefused
from healthmesh.auth.identity.id_tokens import REQUIRED_CLAIMS, IdTokenPolicy, verify_ial2_id_token
from healthmesh.auth.identity.matching import RULES, MatchDecision, Rule
from healthmesh.auth.identity.patients import Ial2PatientIdentifier, Identification, PatientMatcher
from healthmesh.auth.identity.providers import (
    ALLOWED_ALGORITHMS,
    IdentityProvider,
    IdentityProviders,
    load_providers,
    provider_from_dict,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "REQUIRED_CLAIMS",
    "RULES",
    "Ial2PatientIdentifier",
    "IdTokenPolicy",
    "Identification",
    "IdentityClaims",
    "IdentityProvider",
    "IdentityProviders",
    "IdentityRefused",
    "MatchDecision",
    "PatientMatcher",
    "PersonName",
    "PostalAddress",
    "Rule",
    "load_providers",
    "provider_from_dict",
    "read_claims",
    "verify_ial2_id_token",
]
