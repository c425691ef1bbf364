"""The SMART authorization-code flow, step by step (SMART App Launch 2.2 §app-launch).

1. ``begin``: a checked authorization request becomes a pending authorization bound to the
   browser (a cookie secret), and the user is sent to the identity provider (OIDC, with
   state, nonce and PKCE of our own).
2. ``finish_login``: the provider's code becomes an id_token, verified and matched to exactly
   one local Patient by healthmesh.auth.identity; the Patient is the launch context.
3. ``show_consent`` / ``decide``: the user approves a subset of the scopes (or denies); an
   approval mints a single-use, 60-second code bound to client, redirect_uri and challenge.
4. ``authorization_code``: the token endpoint's grant (RFC 6749 §4.1.3, RFC 7636 §4.6).

Every step reads and writes PostgreSQL only, so consecutive steps may hit any process.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from joserfc import jwt

from healthmesh.auth import opaque, pkce
from healthmesh.auth.authcode_settings import AuthCodeSettings
from healthmesh.auth.authorize import AuthorizeRequest, RedirectError, with_query
from healthmesh.auth.errors import OAuthError
from healthmesh.auth.identity import (
    Ial2PatientIdentifier,
    IdentityProvider,
    IdentityProviders,
    IdentityRefused,
)
from healthmesh.auth.oidc_login import LoginFailed, OidcLogin, resolve_issuer
from healthmesh.auth.replay import ReplayGuard
from healthmesh.auth.token_endpoint import TokenRequest
from healthmesh.store.authorizations import AuthorizationStore, CodeRecord, Pending, Redemption
from healthmesh.store.repository import Repository

if TYPE_CHECKING:
    from healthmesh.auth.server import AuthServer

log = logging.getLogger(__name__)

REFRESH_SCOPES = ("offline_access", "online_access")
ID_TOKEN_LIFETIME = 300  # seconds; the id_token is read once, at login (OIDC Core §2)


class Refused(Exception):
    """A step the person must be told about on a page: no redirect to the app happens."""

    def __init__(self, title: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.title = title
        self.message = message
        self.status = status


class Ial2LoginIdentifier:
    """The login provider's id_tokens through Ial2PatientIdentifier; its keys via discovery."""

    def __init__(self, repository: Repository, replay: ReplayGuard) -> None:
        self.providers = IdentityProviders()
        self.identifier = Ial2PatientIdentifier(repository, self.providers, replay)

    def trust(self, issuer: str, *, jwks_uri: str, audience: str) -> None:
        if self.providers.get(issuer) is None:
            self.providers.add(
                IdentityProvider(issuer=issuer, audiences=(audience,), jwks_uri=jwks_uri)
            )

    async def patient_of(self, id_token: str, *, audience: str, nonce: str) -> str:
        found = await self.identifier.identify(id_token, audiences=(audience,), nonce=nonce)
        return found.patient_id


@dataclass(frozen=True, slots=True)
class Consent:
    pending: Pending
    csrf: str
    client_name: str


def _refresh_wanted(scope: str) -> bool:
    return any(s in REFRESH_SCOPES for s in scope.split())


class CodeFlow:
    def __init__(
        self,
        auth: AuthServer,
        store: AuthorizationStore,
        settings: AuthCodeSettings,
        repository: Repository,
    ) -> None:
        self.auth = auth
        self.store = store
        self.settings = settings
        self.login = OidcLogin(settings.login) if settings.login else None
        self.identities = Ial2LoginIdentifier(repository, auth.replay)
        auth.token_endpoint.register("authorization_code", self.authorization_code)

    async def close(self) -> None:
        if self.login is not None:
            await self.login.close()

    # -- 1. authorize --------------------------------------------------------------------------

    async def begin(
        self, request: AuthorizeRequest, *, browser: str, origin: str, callback: str
    ) -> str:
        """Record the request; return where to send the browser (the provider's login)."""
        if self.login is None:
            raise Refused(
                "Sign-in is not available",
                "This server has no identity provider configured for patients to sign in with.",
                status=503,
            )
        issuer = resolve_issuer(self.login.provider, origin)
        state, nonce, verifier = opaque.mint(), opaque.mint(), opaque.mint()
        try:
            url = await self.login.authorization_url(
                issuer,
                redirect_uri=callback,
                state=state,
                nonce=nonce,
                code_challenge=pkce.s256(verifier),
            )
        except LoginFailed as failed:
            log.warning("identity provider unavailable: %s", failed.reason)
            raise Refused(
                "Sign-in is not available", "The identity service cannot be reached.", status=502
            ) from None
        await self.store.create_pending(
            Pending(
                id=opaque.mint(),
                browser_hash=opaque.digest(browser),
                client_id=request.client.client_id,
                redirect_uri=request.redirect_uri,
                scope=" ".join(request.scopes),
                state=request.state,
                code_challenge=request.code_challenge,
                nonce=request.nonce,
                launch_patient=request.launch_patient,
                expires_at=int(time.time()) + self.settings.pending_lifetime,
                idp_state_hash=opaque.digest(state),
                idp_nonce=nonce,
                idp_verifier=verifier,
            )
        )
        return url

    # -- 2. login callback ---------------------------------------------------------------------

    async def finish_login(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser: str | None,
        origin: str,
        callback: str,
    ) -> Pending | RedirectError:
        """The pending authorization, now with its Patient; or an error for the app."""
        expired = Refused(
            "This sign-in has expired",
            "The sign-in took too long or was already completed. Go back to the app and "
            "start again.",
        )
        if not state or self.login is None:
            raise expired
        pending = await self.store.take_login(opaque.digest(state))
        if pending is None:
            raise expired
        if browser is None or opaque.digest(browser) != pending.browser_hash:
            # Not the browser that started: a login CSRF or a leaked link. Kill the request.
            await self.store.drop_pending(pending.id)
            raise Refused(
                "This sign-in belongs to another browser",
                "Start again from the app, in this browser.",
            )
        if error or not code:
            await self.store.drop_pending(pending.id)
            return RedirectError(
                pending.redirect_uri, "access_denied", "the user did not sign in", pending.state
            )
        issuer = resolve_issuer(self.login.provider, origin)
        try:
            if pending.idp_verifier is None or pending.idp_nonce is None:
                raise LoginFailed("the pending login has no PKCE verifier or nonce")
            id_token = await self.login.exchange(
                issuer, code=code, redirect_uri=callback, code_verifier=pending.idp_verifier
            )
            metadata = await self.login.metadata(issuer)
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise LoginFailed("the identity provider's discovery has no jwks_uri")
            self.identities.trust(issuer, jwks_uri=jwks_uri, audience=self.login.provider.client_id)
            patient = await self.identities.patient_of(
                id_token, audience=self.login.provider.client_id, nonce=pending.idp_nonce
            )
        except LoginFailed as failed:
            await self.store.drop_pending(pending.id)
            log.warning("login failed at the identity provider: %s", failed.reason)
            raise Refused(
                "Sign-in failed", "The identity service did not confirm your sign-in.", status=502
            ) from None
        except IdentityRefused as refused:
            await self.store.drop_pending(pending.id)
            log.info("login refused: %s", refused.code)
            raise Refused(
                "We could not find your record",
                "Your identity was confirmed, but it does not match exactly one patient record "
                "here, so no app can be given access. Contact the organization to have your "
                f"record checked. (Reason: {refused.reason}.)",
                status=403,
            ) from None
        if pending.launch_patient is not None and pending.launch_patient != patient:
            await self.store.drop_pending(pending.id)
            raise Refused(
                "This app was opened for another patient",
                "You signed in as someone other than the patient this app was launched for.",
                status=403,
            )
        await self.store.logged_in(pending.id, patient=patient, fhir_user=f"Patient/{patient}")
        return dataclasses.replace(pending, patient=patient, fhir_user=f"Patient/{patient}")

    # -- 3. consent ----------------------------------------------------------------------------

    async def show_consent(self, request_id: str, browser: str | None) -> Consent:
        csrf = opaque.mint()
        pending = None
        if browser is not None:
            pending = await self.store.show_consent(
                request_id, opaque.digest(browser), opaque.digest(csrf)
            )
        if pending is None:
            raise Refused(
                "This request has expired",
                "Nothing is waiting for your decision. Go back to the app and start again.",
            )
        client = await self.auth.clients.get(pending.client_id)
        if client is None or client.disabled:
            await self.store.drop_pending(pending.id)
            raise Refused("Unknown app", "The app is no longer registered with this server.")
        return Consent(pending, csrf, client.name)

    async def decide(
        self,
        *,
        request_id: str,
        browser: str | None,
        csrf: str | None,
        approve: bool,
        chosen: list[str],
    ) -> str:
        """Where to send the browser after the decision: the app's redirect_uri."""
        pending = None
        if browser and csrf:
            pending = await self.store.take_decision(
                request_id, opaque.digest(browser), opaque.digest(csrf)
            )
        if pending is None:
            # A wrong or missing CSRF token, another browser, or a replayed form.
            raise Refused(
                "This form has expired",
                "The form was already sent, expired, or did not come from this page. Go back "
                "to the app and start again.",
                status=403,
            )
        granted = [s for s in pending.scope.split() if s in set(chosen)]
        if not approve or not granted:
            reason = "the user denied access" if not approve else "the user approved no scope"
            return RedirectError(
                pending.redirect_uri, "access_denied", reason, pending.state
            ).location()
        code = opaque.mint()
        await self.store.insert_code(
            opaque.digest(code),
            CodeRecord(
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                scope=" ".join(granted),
                patient=pending.patient,
                fhir_user=pending.fhir_user,
                nonce=pending.nonce,
                expires_at=int(time.time()) + self.settings.code_lifetime,
            ),
        )
        return with_query(pending.redirect_uri, {"code": code, "state": pending.state})

    # -- 4. the authorization_code grant -------------------------------------------------------

    async def authorization_code(self, request: TokenRequest) -> dict[str, Any]:
        code = request.param("code")
        if code is None:
            raise OAuthError("invalid_request", "code is required")
        code_hash = opaque.digest(code)
        redeemed = await self.store.redeem(code_hash)
        if redeemed.outcome is Redemption.REUSED:
            # RFC 6749 §4.1.2: a code used twice revokes what was issued from it.
            if redeemed.grant_id is not None:
                await self.auth.grants.revoke(redeemed.grant_id)
            log.warning("an authorization code was presented again; its tokens are revoked")
            raise OAuthError(
                "invalid_grant", "the code was already used; tokens issued from it are revoked"
            )
        record = redeemed.record
        if redeemed.outcome is not Redemption.FIRST or record is None:
            raise OAuthError("invalid_grant", "the code is unknown or expired")
        if record.client_id != request.client.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if request.param("redirect_uri") != record.redirect_uri:
            raise OAuthError(
                "invalid_grant", "redirect_uri differs from the authorization request's"
            )
        if not pkce.verifies(request.form.get("code_verifier"), record.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")

        refresh = _refresh_wanted(record.scope)
        lifetime = (
            self.auth.refresh_window
            if refresh
            else timedelta(seconds=self.auth.settings.access_token_lifetime)
        )
        grant = await self.auth.grants.create(
            client_id=record.client_id,
            kind="authorization_code",
            scope=record.scope,
            lifetime=lifetime,
            subject=record.fhir_user,
            patient=record.patient,
            fhir_user=record.fhir_user,
        )
        if await self.store.record_grant(code_hash, grant.grant_id):
            # A replay arrived while this redemption was issuing: it loses too.
            await self.auth.grants.revoke(grant.grant_id)
            raise OAuthError("invalid_grant", "the code was used twice; access is revoked")
        refresh_token = (
            await self.auth.grants.issue_refresh_token(grant.grant_id) if refresh else None
        )
        body = await self.auth.token_response(
            grant, issuer=request.issuer, refresh_token=refresh_token
        )
        scopes = record.scope.split()
        if "openid" in scopes and ("fhirUser" in scopes or "profile" in scopes):
            body["id_token"] = await self._id_token(record, request)
        return body

    async def _id_token(self, record: CodeRecord, request: TokenRequest) -> str:
        """OIDC Core §2 id_token with SMART's fhirUser, signed by the server's keys (JWKS)."""
        kid, key = await self.auth.keys.signing_key()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": request.issuer,
            "sub": record.fhir_user,
            "aud": record.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "jti": secrets.token_urlsafe(16),
            "fhirUser": f"{request.issuer}/{record.fhir_user}",
        }
        if record.nonce:
            claims["nonce"] = record.nonce
        return jwt.encode(
            {"alg": "RS256", "kid": kid, "typ": "JWT"}, claims, key, algorithms=["RS256"]
        )

    # -- EHR launch ----------------------------------------------------------------------------

    async def mint_launch(self, patient: str, *, issued_by: str) -> tuple[str, int]:
        lifetime = self.settings.launch_lifetime
        launch = await mint_launch(self.store, patient, issued_by=issued_by, lifetime=lifetime)
        return launch, lifetime

    async def patient_of_launch(self, launch: str) -> str | None:
        return await self.store.launch_patient(opaque.digest(launch))


async def mint_launch(
    store: AuthorizationStore, patient: str, *, issued_by: str, lifetime: int
) -> str:
    """A new opaque EHR launch id for ``patient`` (only its hash is stored)."""
    launch = opaque.mint()
    await store.create_launch(
        opaque.digest(launch),
        patient=patient,
        issued_by=issued_by,
        expires_at=int(time.time()) + lifetime,
    )
    return launch
