"""The TEST identity provider: a standard OpenID Connect provider (OIDC Core 1.0, Discovery
1.0, RFC 6749 authorization code + RFC 7636 PKCE S256) for synthetic people only.

Endpoints under its issuer ``<origin>/idp``: ``/.well-known/openid-configuration``, ``/jwks``,
``/authorize`` (login page: password + TOTP = AAL2), ``/login`` (the form's target),
``/token``. Relying parties: the clients in ``idp_client``, and the built-in public client
``healthmesh`` whose redirect URIs may be any URL on the IdP's own origin (the node that
serves the IdP is its relying party).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import pyotp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthmesh.auth.identity.test_idp.accounts import check_password, hash_password
from healthmesh.auth.identity.test_idp.issue import id_token_claims, person_of
from healthmesh.auth.identity.test_idp.keys import ALG, SigningKeys
from healthmesh.auth.identity.test_idp.pages import LABEL, error_page, login_page, page
from healthmesh.auth.identity.test_idp.ratelimit import LoginLimiter
from healthmesh.store.identity_provider import CodeRow, IdpStore, Pool

log = logging.getLogger(__name__)

BUILTIN_CLIENT = "healthmesh"
CODE_LIFETIME = timedelta(seconds=60)
_AUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
)
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# A dummy hash so that an unknown username costs the same scrypt as a known one.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class _Refusal(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="test-idp"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _html(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


class _Labelled:
    """Every response says what this is, and HTML can never be framed (clickjacking)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def labelled(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-test-identity-service", b"synthetic people only"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (
                        b"content-security-policy",
                        b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                    ),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, labelled)


class OidcTestProvider:
    """The OIDC provider; one instance per mounted app, state in PostgreSQL."""

    def __init__(self, pool: Pool, *, issuer: str | None = None) -> None:
        self.store = IdpStore(pool)
        self.keys = SigningKeys(self.store)
        self.limiter = LoginLimiter(self.store)
        self.fixed_issuer = issuer

    def issuer(self, request: Request) -> str:
        if self.fixed_issuer:
            return self.fixed_issuer
        # Mounted at /idp: Starlette's Mount puts the prefix in root_path (ASGI spec).
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{root}"

    # --- discovery ------------------------------------------------------------------------
    async def configuration(self, request: Request) -> Response:
        iss = self.issuer(request)
        return JSONResponse(
            {
                "issuer": iss,
                "authorization_endpoint": f"{iss}/authorize",
                "token_endpoint": f"{iss}/token",
                "jwks_uri": f"{iss}/jwks",
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [ALG],
                "scopes_supported": ["openid", "profile", "email", "phone", "address"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "none",
                ],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": [
                    "iss",
                    "sub",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "jti",
                    "nonce",
                    "amr",
                    "acr",
                    "identity_assurance_level",
                    "given_name",
                    "middle_name",
                    "family_name",
                    "name_suffix",
                    "birthdate",
                    "gender",
                    "email",
                    "phone_number",
                    "address",
                    "ssn_itin_short",
                ],
                "authorization_response_iss_parameter_supported": True,  # RFC 9207
                "service_documentation": LABEL,
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(await self.keys.jwks(), headers={"Cache-Control": "max-age=300"})

    async def home(self, request: Request) -> Response:
        return _html(
            page(
                "HealthMesh test identity provider",
                "<p>An OpenID Connect provider for the synthetic people in this demo node."
                " Accounts: <code>healthmesh idp accounts</code>.</p>",
            )
        )

    # --- authorization --------------------------------------------------------------------
    async def _client(self, client_id: str) -> tuple[str | None, list[str]] | None:
        if client_id == BUILTIN_CLIENT:
            return None, []
        return await self.store.client(client_id)

    async def _check_client(self, request: Request, params: Mapping[str, str]) -> None:
        """Client and redirect URI first: when they are wrong nothing may be redirected
        (RFC 6749 §4.1.2.1), so these errors are shown on a page."""
        client_id = params.get("client_id", "")
        client = await self._client(client_id)
        if client is None:
            raise _Refusal("invalid_client", "unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if client_id == BUILTIN_CLIENT:
            ours, theirs = urlsplit(self.issuer(request)), urlsplit(redirect_uri)
            if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc) or theirs.fragment:
                raise _Refusal("invalid_request", "redirect_uri is not registered")
        elif redirect_uri not in client[1]:
            raise _Refusal("invalid_request", "redirect_uri is not registered")

    @staticmethod
    def _check_request(params: Mapping[str, str]) -> None:
        if params.get("response_type") != "code":
            raise _Refusal("unsupported_response_type", "only response_type=code is supported")
        if "openid" not in params.get("scope", "").split():
            raise _Refusal("invalid_scope", "scope must include openid")
        if "none" in params.get("prompt", "").split():
            # OIDC Core §3.1.2.1: no session is ever kept here, so a silent login cannot succeed.
            raise _Refusal("login_required", "this provider always asks the user to sign in")
        if params.get("code_challenge_method") != "S256" or not _VERIFIER.fullmatch(
            params.get("code_challenge", "")
        ):
            raise _Refusal("invalid_request", "PKCE with code_challenge_method=S256 is required")

    def _redirect_error(self, request: Request, params: Mapping[str, str], e: _Refusal) -> Response:
        query = {"error": e.error, "error_description": e.description, "iss": self.issuer(request)}
        if params.get("state"):
            query["state"] = params["state"]
        return RedirectResponse(_with_query(params["redirect_uri"], query), status_code=303)

    async def _validated(self, request: Request, params: Mapping[str, str]) -> Response | None:
        try:
            await self._check_client(request, params)
        except _Refusal as e:
            return _html(error_page(e.description), status=400)
        try:
            self._check_request(params)
        except _Refusal as e:
            return self._redirect_error(request, params, e)
        return None

    async def authorize(self, request: Request) -> Response:
        repeated = [k for k in _AUTH_PARAMS if len(request.query_params.getlist(k)) > 1]
        if repeated:  # RFC 6749 §3.1: parameters MUST NOT be included more than once
            return _html(error_page(f"parameter {repeated[0]} is repeated"), status=400)
        params = {k: v for k, v in request.query_params.items() if k in _AUTH_PARAMS}
        refused = await self._validated(request, params)
        if refused is not None:
            return refused
        return _html(login_page(params, params["client_id"]), headers=_NO_STORE)

    async def login(self, request: Request) -> Response:
        try:
            fields = await _form(request)
        except _Refusal as e:
            return _html(error_page(e.description), status=e.status)
        params = {k: v for k, v in fields.items() if k in _AUTH_PARAMS}
        refused = await self._validated(request, params)
        if refused is not None:
            return refused
        username = fields.get("username", "").strip().lower()
        address = request.client.host if request.client else "unknown"
        wait = await self.limiter.retry_after(username, address)
        if wait is not None:
            return _html(
                error_page("Too many failed sign-ins. Wait, then try again."),
                status=429,
                headers={"Retry-After": str(wait), **_NO_STORE},
            )
        account = await self.store.account(username) if username else None
        password_ok = check_password(
            fields.get("password", ""), account.password_hash if account else _DUMMY_HASH
        )
        step = _totp_step(account.totp_secret, fields.get("totp", "")) if account else None
        if (
            account is None
            or not password_ok
            or step is None
            or not await self.store.use_totp_step(account.username, step)
        ):
            await self.limiter.failed(username, address)
            log.info("test idp: failed sign-in")  # no username: it may be a mistyped password
            return _html(
                login_page(
                    params,
                    params["client_id"],
                    error="The username, password or one-time code is not right.",
                ),
                status=401,
                headers=_NO_STORE,
            )
        await self.limiter.succeeded(username)
        code = secrets.token_urlsafe(32)
        await self.store.add_code(
            code,
            CodeRow(
                client_id=params["client_id"],
                redirect_uri=params["redirect_uri"],
                code_challenge=params["code_challenge"],
                nonce=params.get("nonce"),
                scope=params["scope"],
                username=account.username,
                auth_time=datetime.now(UTC),
            ),
            CODE_LIFETIME,
        )
        query = {"code": code, "iss": self.issuer(request)}
        if params.get("state"):
            query["state"] = params["state"]
        return RedirectResponse(
            _with_query(params["redirect_uri"], query), status_code=303, headers=_NO_STORE
        )

    # --- token ----------------------------------------------------------------------------
    async def _authenticate_client(self, request: Request, form: Mapping[str, str]) -> str:
        """client_secret_basic, client_secret_post or none (public client, PKCE only)."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
                basic_id, _, basic_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Refusal("invalid_client", "malformed Basic credentials", 401) from exc
            # RFC 6749 §2.3.1: both parts are form-encoded before Base64
            basic_id, basic_secret = unquote_plus(basic_id), unquote_plus(basic_secret)
            if client_id not in (None, basic_id) or "client_secret" in form:
                raise _Refusal("invalid_request", "one client authentication method only")
            client_id, secret = basic_id, basic_secret
        if not client_id:
            raise _Refusal("invalid_client", "client_id is required", 401)
        client = await self._client(client_id)
        if client is None:
            raise _Refusal("invalid_client", "unknown client", 401)
        secret_hash = client[0]
        if secret_hash is not None:
            given = hashlib.sha256((secret or "").encode()).hexdigest()
            if not hmac.compare_digest(given, secret_hash):
                raise _Refusal("invalid_client", "client authentication failed", 401)
        return client_id

    async def token(self, request: Request) -> Response:
        try:
            form = await _form(request)
            client_id = await self._authenticate_client(request, form)
            if form.get("grant_type") != "authorization_code":
                raise _Refusal("unsupported_grant_type", "only authorization_code is supported")
            code = form.get("code", "")
            grant = await self.store.take_code(code) if code else None
            if grant is None or grant.client_id != client_id:
                raise _Refusal("invalid_grant", "the code is unknown, expired or already used")
            if form.get("redirect_uri") != grant.redirect_uri:
                raise _Refusal("invalid_grant", "redirect_uri differs from the authorization's")
            verifier = form.get("code_verifier", "")
            if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
                _s256(verifier), grant.code_challenge
            ):
                raise _Refusal("invalid_grant", "PKCE code_verifier does not match")
            account = await self.store.account(grant.username)
            if account is None:
                raise _Refusal("invalid_grant", "the account no longer exists")
        except _Refusal as e:
            return _oauth_error(e.error, e.description, e.status)
        claims = id_token_claims(
            issuer=self.issuer(request),
            subject=account.subject,
            audience=client_id,
            person=person_of(account.claims),
            auth_time=int(grant.auth_time.timestamp()),
            nonce=grant.nonce,
        )
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(32),  # no userinfo: claims are in id_token
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": grant.scope,
                "id_token": await self.keys.sign(claims),
            },
            headers=_NO_STORE,
        )

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.home, methods=["GET"]),
            Route("/.well-known/openid-configuration", self.configuration, methods=["GET"]),
            Route("/jwks", self.jwks, methods=["GET"]),
            Route("/authorize", self.authorize, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/token", self.token, methods=["POST"]),
        ]
        return _Labelled(Starlette(routes=routes))


async def _form(request: Request, limit: int = 16 * 1024) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (RFC 6749 §3.2, HTML forms); parameters may
    not repeat (RFC 6749 §3.1)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise _Refusal("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refusal("invalid_request", "the request body is too large", 413)
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refusal("invalid_request", "the form does not parse") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise _Refusal("invalid_request", f"parameter {key[:40]!r} is repeated")
        form[key] = value
    return form


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _totp_step(secret: str, code: str) -> int | None:
    """The RFC 6238 time step ``code`` belongs to, allowing one step of clock drift."""
    if not re.fullmatch(r"\d{6}", code.strip()):
        return None
    totp = pyotp.TOTP(secret)
    now = int(time.time())
    for drift in (0, -1, 1):
        at = now + drift * totp.interval
        if hmac.compare_digest(totp.at(at), code.strip()):
            return at // totp.interval
    return None


def _with_query(uri: str, query: Mapping[str, Any]) -> str:
    return f"{uri}{'&' if urlsplit(uri).query else '?'}{urlencode(query)}"
