"""Discovery documents: SMART's ``.well-known/smart-configuration`` (SMART App Launch 2.2
§2.1 "Conformance": required and recommended fields) and OpenID Connect Discovery 1.0."""

from __future__ import annotations

from typing import Any

from healthmesh.auth.assertions import ASSERTION_ALGORITHMS

# What this server does (SMART 2.2 §2.1.3 capabilities). The authorization-code flow and its
# launch, public/confidential clients, patient context, offline access, v1 and v2 scopes.
CAPABILITIES = [
    "launch-standalone",
    "launch-ehr",  # [base]/auth/launch and `healthmesh launch` (api/authorize_routes.py)
    "authorize-post",  # POST [base]/auth/authorize is served
    "context-ehr-patient",
    "sso-openid-connect",  # id_token with fhirUser for openid fhirUser (auth/code_flow.py)
    "client-public",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "permission-offline",
    "permission-patient",
    "permission-v1",
    "permission-v2",
]
SCOPES = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.read",
    "system/*.rs",
    "system/*.read",
]


def endpoints(base: str) -> dict[str, str]:
    return {
        "issuer": base,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "authorization_endpoint": f"{base}/auth/authorize",
        "token_endpoint": f"{base}/auth/token",
        "introspection_endpoint": f"{base}/auth/introspect",
        "revocation_endpoint": f"{base}/auth/revoke",
        "registration_endpoint": f"{base}/auth/register",
    }


def smart_configuration(base: str, grant_types: list[str]) -> dict[str, Any]:
    return {
        **endpoints(base),
        "grant_types_supported": grant_types,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(base: str, grant_types: list[str]) -> dict[str, Any]:
    return {
        **endpoints(base),
        "grant_types_supported": grant_types,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
    }
