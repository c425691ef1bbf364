-- The built-in TEST identity provider (auth/identity/test_idp, docs/identity.md): a real
-- OpenID Connect provider for SYNTHETIC people only. Everything it keeps is here, in
-- PostgreSQL, so that any number of server processes share keys, codes and rate limits.

-- Per-installation seed from which demo passwords, TOTP secrets and subjects are derived
-- (deterministic per database, different between databases).
CREATE TABLE idp_seed (
    id   integer PRIMARY KEY CHECK (id = 1),
    seed bytea   NOT NULL
);

-- Signing keys (private JWK JSON). The newest unretired key signs; all unretired keys are
-- published in the JWKS.
CREATE TABLE idp_signing_key (
    kid         text        PRIMARY KEY,
    alg         text        NOT NULL,
    private_jwk text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- One account per synthetic Patient: password stored as an scrypt hash; the TOTP secret is
-- kept as TOTP needs it (RFC 6238 §5.1); last_totp_step refuses a code's second use.
CREATE TABLE idp_account (
    username       text        PRIMARY KEY,
    patient_id     text        NOT NULL UNIQUE,
    subject        text        NOT NULL UNIQUE,
    password_hash  text        NOT NULL,
    totp_secret    text        NOT NULL,
    last_totp_step bigint      NOT NULL DEFAULT 0,
    claims         text        NOT NULL, -- the person's id_token claims (JSON, CSP shape)
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Registered relying parties; secret_hash NULL for a public client (PKCE only).
CREATE TABLE idp_client (
    client_id     text   PRIMARY KEY,
    secret_hash   text,
    redirect_uris text[] NOT NULL
);

-- Authorization codes by sha256, single use, short-lived (RFC 6749 §4.1.2, §10.5).
CREATE TABLE idp_authorization_code (
    code_hash      bytea       PRIMARY KEY,
    client_id      text        NOT NULL,
    redirect_uri   text        NOT NULL,
    code_challenge text        NOT NULL,
    nonce          text,
    scope          text        NOT NULL,
    username       text        NOT NULL REFERENCES idp_account (username) ON DELETE CASCADE,
    auth_time      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);
CREATE INDEX idp_authorization_code_expiry ON idp_authorization_code (expires_at);

-- Failed logins, per bucket ("user:<name>", "ip:<address>"), for 429 + Retry-After.
CREATE TABLE idp_login_failure (
    bucket    text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idp_login_failure_bucket ON idp_login_failure (bucket, failed_at);
