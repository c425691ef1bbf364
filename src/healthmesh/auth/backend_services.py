"""``client_credentials`` with private_key_jwt: SMART Backend Services, and cms_smart v1.

Without cms_smart: an organization's system asks for ``system/`` scopes; the assertion's
``hl7-b2b`` extension (organization_id, purpose_of_use) is recorded in the grant. With
``extensions.cms_smart``: a patient's app presents an IAL2 id_token; the PatientIdentifier
resolves the one patient it names, and the token is patient-scoped (``patient/`` scopes,
``patient`` in the response). Neither gets a refresh token (RFC 6749 §4.4.3), and each grant
lives exactly as long as its one token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from healthmesh.auth.cms_smart import cms_smart_extension, hl7_b2b_extension, refusal_reason
from healthmesh.auth.errors import OAuthError
from healthmesh.auth.scope_sets import not_covered, parse_scope, resource_scope
from healthmesh.auth.token_endpoint import TokenRequest

if TYPE_CHECKING:
    from healthmesh.auth.server import AuthServer


def requested_scope(request: TokenRequest, context: str) -> str:
    """The requested scope, when every part is a ``context/`` scope the client may have."""
    scope = request.param("scope")
    if scope is None:
        raise OAuthError("invalid_scope", "scope is required")
    scopes = parse_scope(scope)
    wrong = [s for s in scopes if (r := resource_scope(s)) is None or r.context != context]
    if wrong:
        raise OAuthError("invalid_scope", f"only {context}/ scopes here, not: {' '.join(wrong)}")
    extra = not_covered(request.client.scope, scope)
    if extra:
        raise OAuthError("invalid_scope", f"not allowed for this client: {' '.join(extra)}")
    return " ".join(scopes)


def install(server: AuthServer) -> None:
    async def client_credentials(request: TokenRequest) -> dict[str, Any]:
        if not request.client.confidential or not request.assertion:
            raise OAuthError("invalid_client", "client_credentials needs private_key_jwt")
        claims = dict(request.assertion)
        lifetime = server.settings.backend_token_lifetime
        cms = cms_smart_extension(claims)
        if cms is not None:
            scope = requested_scope(request, "patient")
            try:
                patient = await server.patient_identifier.patient_for(cms.id_token)
            except Exception as refused:
                reason = refusal_reason(refused)
                if reason is None:
                    raise  # a fault, not a refusal: logged, and a server_error
                raise OAuthError("invalid_grant", reason) from None
            grant = await server.grants.create(
                client_id=request.client.client_id,
                kind="cms_smart",
                scope=scope,
                lifetime=timedelta(seconds=lifetime),
                subject=f"Patient/{patient}",
                patient=patient,
                fhir_user=f"Patient/{patient}",
                purpose_of_use=cms.purpose_of_use,
                organization=request.client.organization_id,
            )
        else:
            scope = requested_scope(request, "system")
            b2b = hl7_b2b_extension(claims)
            grant = await server.grants.create(
                client_id=request.client.client_id,
                kind="client_credentials",
                scope=scope,
                lifetime=timedelta(seconds=lifetime),
                organization=b2b.organization_id if b2b else request.client.organization_id,
                purpose_of_use=b2b.purpose_of_use if b2b else None,
            )
        return await server.token_response(grant, issuer=request.issuer, lifetime=lifetime)

    server.token_endpoint.register("client_credentials", client_credentials)
